import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import pg from "pg";
import { ManagedProcess } from "./managed-process.js";

/** The three services of the engine. */
export const SERVICES = ["ingest", "scheduler", "executor"] as const;

/** A service's name. */
export type ServiceName = (typeof SERVICES)[number];

/** The one process of the embedded engine (`stepwise dev`). */
export const EMBEDDED = "dev";

/** Where and how to deploy the engine. */
export interface DeploymentOptions {
  databaseUrl: string;
  natsUrl: string;
  /** DATABASE_POOL_SIZE of each service. */
  poolSize: number;
  logDir: string;
  /** Folder for a V8 CPU profile of each process (node --cpu-prof), when set. */
  cpuProfileDir?: string | undefined;
  /**
   * `stepwise dev` instead of the three services: one process, PGlite in
   * a data folder of its own, the in-process bus; databaseUrl and natsUrl
   * are not used.
   */
  embedded?: boolean;
  /** STEPWISE_RETENTION of the services, when set. */
  retention?: string | undefined;
}

const CLI = fileURLToPath(new URL("../../services/cli/dist/main.js", import.meta.url));

/**
 * Stepwise as a user deploys it: `stepwise migrate`, then ingest, scheduler
 * and executor as separate `stepwise start` processes on the real Postgres
 * and NATS, in a schema (`bench_<random>`) and a stream prefix of their own,
 * which remove() deletes.
 */
export class EngineDeployment {
  readonly id = randomBytes(5).toString("hex");
  readonly schema = `bench_${this.id}`;
  readonly prefix = `bench_${this.id}`;
  /** The engine's processes by name: the three services, or `dev` alone when embedded. */
  readonly services = new Map<string, ManagedProcess>();
  private ingestPort = 0;
  private executorPort = 0;
  private dataDir: string | undefined;

  constructor(private readonly options: DeploymentOptions) {}

  /** URL of IngestService and RunService, for the client. */
  get ingestUrl(): string {
    return `http://127.0.0.1:${this.ingestPort}`;
  }

  /** URL of WorkerService, for the worker. */
  get executorUrl(): string {
    return `http://127.0.0.1:${this.executorPort}`;
  }

  /** Migrates the schema, then starts the three services and waits until each serves. */
  async start(): Promise<void> {
    if (this.options.embedded) return this.startEmbedded();
    this.ingestPort = await freePort();
    this.executorPort = await freePort();
    const migrate = ManagedProcess.node("migrate", [CLI, "migrate"], { env: this.env(), logDir: this.options.logDir });
    await migrate.waitForExit(60_000);
    if (migrate.child.exitCode !== 0) throw new Error(`stepwise migrate failed:\n${migrate.tail()}`);
    await Promise.all(
      SERVICES.map(async (name) => {
        const args = [...profileArgs(this.options.cpuProfileDir, name), CLI, "start", name];
        const proc = ManagedProcess.node(name, args, { env: this.env(), logDir: this.options.logDir });
        this.services.set(name, proc);
        await proc.waitForOutput(`"${name} started"`, 30_000);
      }),
    );
  }

  /** `stepwise dev` on a free port, with its data in a folder of its own (PGlite on disk, as `dev` keeps it by default). */
  private async startEmbedded(): Promise<void> {
    this.ingestPort = this.executorPort = await freePort();
    this.dataDir = mkdtempSync(join(tmpdir(), "stepwise-bench-dev-"));
    const args = [...profileArgs(this.options.cpuProfileDir, EMBEDDED), CLI, "dev", "--port", String(this.ingestPort), "--dir", this.dataDir];
    const proc = ManagedProcess.node(EMBEDDED, args, { env: { ...this.env(), STEPWISE_DASHBOARD: "false" }, logDir: this.options.logDir });
    this.services.set(EMBEDDED, proc);
    await proc.waitForOutput("stepwise dev listening", 60_000);
  }

  /** Stops the services (SIGTERM, so they drain and write their profiles). */
  async stop(): Promise<void> {
    await Promise.all([...this.services.values()].map((p) => p.stop(15_000)));
  }

  /** Drops the schema and deletes the streams (with their consumers). */
  async remove(): Promise<void> {
    if (this.options.embedded) {
      if (this.dataDir) rmSync(this.dataDir, { recursive: true, force: true });
      return;
    }
    const db = new pg.Client({ connectionString: this.options.databaseUrl });
    await db.connect();
    try {
      await db.query(`DROP SCHEMA IF EXISTS ${this.schema} CASCADE`);
    } finally {
      await db.end();
    }
    const nc = await connect({ servers: this.options.natsUrl.split(",") });
    try {
      const jsm = await jetstreamManager(nc);
      const upper = this.prefix.toUpperCase();
      for (const stream of [`${upper}_EVENTS`, `${upper}_WORK`]) await jsm.streams.delete(stream).catch(() => false);
    } finally {
      await nc.close();
    }
  }

  /** A pool on the deployment's schema, for checks outside the measured windows; none when embedded (PGlite is the dev process's). */
  pool(): pg.Pool | undefined {
    if (this.options.embedded) return undefined;
    const pool = new pg.Pool({ connectionString: this.options.databaseUrl, max: 2, options: `-c search_path=${this.schema}` });
    pool.on("error", () => {});
    return pool;
  }

  private env(): NodeJS.ProcessEnv {
    return {
      ...process.env,
      DATABASE_URL: this.options.databaseUrl,
      DATABASE_SCHEMA: this.schema,
      DATABASE_POOL_SIZE: String(this.options.poolSize),
      NATS_URL: this.options.natsUrl,
      STEPWISE_PREFIX: this.prefix,
      HOST: "127.0.0.1",
      INGEST_PORT: String(this.ingestPort),
      EXECUTOR_PORT: String(this.executorPort),
      // The scheduler's /metrics and /healthz, on a free port: benches and tests run side by side.
      SCHEDULER_PORT: "0",
      LOG_LEVEL: process.env["LOG_LEVEL"] ?? "info",
      // The bench's clients send no key; STEPWISE_INSECURE=false with STEPWISE_API_KEY set measures with one.
      STEPWISE_INSECURE: process.env["STEPWISE_INSECURE"] ?? "true",
      // W7's long run journals 10,000 steps and more; the default limit is 10,000.
      STEPWISE_MAX_STEPS_PER_RUN: process.env["STEPWISE_MAX_STEPS_PER_RUN"] ?? "100000",
      ...(this.options.retention ? { STEPWISE_RETENTION: this.options.retention } : {}),
    };
  }
}

/** Node options that write a CPU profile <dir>/<name>.cpuprofile when the process exits; none without dir. */
export function profileArgs(dir: string | undefined, name: string): string[] {
  return dir ? ["--cpu-prof", `--cpu-prof-dir=${dir}`, `--cpu-prof-name=${name}.cpuprofile`] : [];
}

/** A free TCP port on loopback. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}
