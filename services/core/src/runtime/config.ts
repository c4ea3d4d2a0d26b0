import { z } from "zod";

const port = z.coerce.number().int().min(0).max(65535);
const ms = z.coerce.number().int().positive();

const schema = z.object({
  DATABASE_URL: z.string().default("postgres://postgres@127.0.0.1:5432/postgres"),
  DATABASE_SCHEMA: z.string().regex(/^[a-z_][a-z0-9_]*$/).optional(),
  DATABASE_POOL_SIZE: z.coerce.number().int().positive().default(10),
  NATS_URL: z.string().default("nats://127.0.0.1:4222"),
  STEPWISE_PREFIX: z.string().regex(/^[a-z][a-z0-9_-]*$/).default("stepwise"),
  HOST: z.string().default("0.0.0.0"),
  INGEST_PORT: port.default(8288),
  EXECUTOR_PORT: port.default(8289),
  SCHEDULER_PORT: port.default(8290),
  STEPWISE_LEASE_MS: ms.default(15_000),
  STEPWISE_REQUEUE_AFTER_MS: ms.default(60_000),
  STEPWISE_QUEUED_BACKSTOP_MS: ms.default(3_600_000),
  STEPWISE_RECONCILE_INTERVAL_MS: ms.default(1_000),
  STEPWISE_HEARTBEAT_MS: ms.default(5_000),
  STEPWISE_SCHEDULER_CONCURRENCY: z.coerce.number().int().positive().default(64),
  LOG_LEVEL: z.enum(["trace", "debug", "info", "warn", "error", "fatal", "silent"]).default("info"),
  STEPWISE_DASHBOARD: z.enum(["true", "false", "1", "0"]).default("true"),
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
  logLevel: string;
  /** Whether ingest serves the dashboard at / (STEPWISE_DASHBOARD, true unless "false" or "0"). */
  dashboard: boolean;
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
  return {
    databaseUrl: e.DATABASE_URL,
    databaseSchema: e.DATABASE_SCHEMA,
    databasePoolSize: e.DATABASE_POOL_SIZE,
    natsUrl: e.NATS_URL,
    prefix: e.STEPWISE_PREFIX,
    host: e.HOST,
    ingestPort: e.INGEST_PORT,
    executorPort: e.EXECUTOR_PORT,
    schedulerPort: e.SCHEDULER_PORT,
    leaseMs: e.STEPWISE_LEASE_MS,
    requeueAfterMs: e.STEPWISE_REQUEUE_AFTER_MS,
    queuedBackstopMs: e.STEPWISE_QUEUED_BACKSTOP_MS,
    reconcileIntervalMs: e.STEPWISE_RECONCILE_INTERVAL_MS,
    heartbeatMs: e.STEPWISE_HEARTBEAT_MS,
    schedulerConcurrency: e.STEPWISE_SCHEDULER_CONCURRENCY,
    logLevel: e.LOG_LEVEL,
    dashboard: e.STEPWISE_DASHBOARD === "true" || e.STEPWISE_DASHBOARD === "1",
  };
}
