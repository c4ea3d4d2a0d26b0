import { z } from "zod";

const port = z.coerce.number().int().min(0).max(65535);

const UNIT_MS = { m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/** A retention: a whole number of minutes, hours or days ("30d", "12h", "90m"), at least one minute. */
const retention = z
  .string()
  .regex(/^[1-9][0-9]{0,5}[mhd]$/, "a whole number and a unit, m, h or d (such as 30d)")
  .transform((v) => Number(v.slice(0, -1)) * UNIT_MS[v.at(-1) as keyof typeof UNIT_MS]);
const ms = z.coerce.number().int().positive();

const schema = z.object({
  DATABASE_URL: z.string().default("postgres://postgres@127.0.0.1:5432/postgres"),
  DATABASE_SCHEMA: z.string().regex(/^[a-z_][a-z0-9_]*$/).optional(),
  DATABASE_POOL_SIZE: z.coerce.number().int().positive().default(10),
  NATS_URL: z.string().default("nats://127.0.0.1:4222"),
  STEPWISE_PREFIX: z.string().regex(/^[a-z][a-z0-9_-]*$/).default("stepwise"),
  STEPWISE_NATS_REPLICAS: z.coerce.number().int().min(1).max(5).default(1),
  HOST: z.string().default("0.0.0.0"),
  INGEST_PORT: port.default(8288),
  EXECUTOR_PORT: port.default(8289),
  SCHEDULER_PORT: port.default(8290),
  STEPWISE_LEASE_MS: ms.default(15_000),
  STEPWISE_REQUEUE_AFTER_MS: ms.optional(),
  STEPWISE_QUEUED_BACKSTOP_MS: ms.default(3_600_000),
  STEPWISE_RECONCILE_INTERVAL_MS: ms.default(1_000),
  STEPWISE_HEARTBEAT_MS: ms.default(5_000),
  STEPWISE_SCHEDULER_CONCURRENCY: z.coerce.number().int().positive().default(64),
  STEPWISE_TLS_CERT_FILE: z.string().min(1).optional(),
  STEPWISE_TLS_KEY_FILE: z.string().min(1).optional(),
  STEPWISE_MAX_STEPS_PER_RUN: z.coerce.number().int().positive().max(1_000_000).default(10_000),
  LOG_LEVEL: z.enum(["trace", "debug", "info", "warn", "error", "fatal", "silent"]).default("info"),
  STEPWISE_DASHBOARD: z.enum(["true", "false", "1", "0"]).default("true"),
  STEPWISE_INSECURE: z.enum(["true", "false", "1", "0"]).default("false"),
  STEPWISE_RETENTION: retention.optional(),
});

/** Configuration of the services, read from the environment. */
export interface Config {
  databaseUrl: string;
  /** Schema for every table; the connection's default when unset. */
  databaseSchema: string | undefined;
  databasePoolSize: number;
  natsUrl: string;
  /** Prefix of NATS streams, subjects and consumers. */
  prefix: string;
  /** Replicas of the NATS streams and their consumers (3 on a three-node cluster). */
  natsReplicas: number;
  host: string;
  ingestPort: number;
  executorPort: number;
  /** Where the scheduler serves GET /healthz and GET /metrics (0: a free port). */
  schedulerPort: number;
  /** How long an executor holds a run without renewing; a crashed executor's runs move on after it. */
  leaseMs: number;
  /** When the reconciler publishes again the work of a run handed back whose publish was not confirmed. */
  requeueAfterMs: number;
  /** When a run waiting in the queue has its work published once more, in case the bus lost it. */
  queuedBackstopMs: number;
  /** How often the scheduler's reconciler sweeps for stale runs. */
  reconcileIntervalMs: number;
  /** Heartbeat interval asked of workers. */
  heartbeatMs: number;
  /** Events a scheduler handles at once. */
  schedulerConcurrency: number;
  /** Most steps a run's journal may hold; the step past it fails the run. */
  maxStepsPerRun: number;
  /** Certificate and key files (PEM) ingest and the executor serve TLS with; plain HTTP when unset. */
  tls: { certFile: string; keyFile: string } | undefined;
  logLevel: string;
  /** Whether ingest serves the dashboard at / (STEPWISE_DASHBOARD, true unless "false" or "0"). */
  dashboard: boolean;
  /**
   * STEPWISE_INSECURE: calls without an API key are let through, into the
   * `default` environment, with every right. Off unless "true" or "1";
   * a key that is sent is checked either way.
   */
  insecure: boolean;
  /** STEPWISE_RETENTION in ms: the scheduler deletes ended runs and unreferenced events older than it; undefined keeps everything. */
  retentionMs: number | undefined;
}

/**
 * Reads the configuration from environment variables (docs/configuration.md
 * lists them). Throws a readable error naming each invalid variable.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const parsed = schema.safeParse(env);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join(".")}: ${i.message}`);
    throw new Error(`invalid configuration:\n${lines.join("\n")}`);
  }
  const e = parsed.data;
  if ((e.STEPWISE_TLS_CERT_FILE === undefined) !== (e.STEPWISE_TLS_KEY_FILE === undefined)) {
    throw new Error("invalid configuration:\n  STEPWISE_TLS_CERT_FILE and STEPWISE_TLS_KEY_FILE: set both, or neither");
  }
  return {
    databaseUrl: e.DATABASE_URL,
    databaseSchema: e.DATABASE_SCHEMA,
    databasePoolSize: e.DATABASE_POOL_SIZE,
    natsUrl: e.NATS_URL,
    prefix: e.STEPWISE_PREFIX,
    natsReplicas: e.STEPWISE_NATS_REPLICAS,
    host: e.HOST,
    ingestPort: e.INGEST_PORT,
    executorPort: e.EXECUTOR_PORT,
    schedulerPort: e.SCHEDULER_PORT,
    leaseMs: e.STEPWISE_LEASE_MS,
    // Unset, the lease: a process that dies between queueing a run and publishing its work delays it no longer than a crashed executor does.
    requeueAfterMs: e.STEPWISE_REQUEUE_AFTER_MS ?? e.STEPWISE_LEASE_MS,
    queuedBackstopMs: e.STEPWISE_QUEUED_BACKSTOP_MS,
    reconcileIntervalMs: e.STEPWISE_RECONCILE_INTERVAL_MS,
    heartbeatMs: e.STEPWISE_HEARTBEAT_MS,
    schedulerConcurrency: e.STEPWISE_SCHEDULER_CONCURRENCY,
    maxStepsPerRun: e.STEPWISE_MAX_STEPS_PER_RUN,
    tls: e.STEPWISE_TLS_CERT_FILE && e.STEPWISE_TLS_KEY_FILE ? { certFile: e.STEPWISE_TLS_CERT_FILE, keyFile: e.STEPWISE_TLS_KEY_FILE } : undefined,
    logLevel: e.LOG_LEVEL,
    dashboard: e.STEPWISE_DASHBOARD === "true" || e.STEPWISE_DASHBOARD === "1",
    insecure: e.STEPWISE_INSECURE === "true" || e.STEPWISE_INSECURE === "1",
    retentionMs: e.STEPWISE_RETENTION,
  };
}
