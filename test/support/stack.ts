import type { RunInfo } from "@stepwise/sdk";
import { spawn, type ChildProcess } from "node:child_process";

import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { freePort, killProcess, waitForOutput } from "../../bench/src/private-servers.js";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { liveStacks, stoppedStacks, type LiveStack } from "./live-stacks.js";

export { freePort, killProcess, NatsCluster, PrivateNats, PrivatePostgres, waitForOutput } from "../../bench/src/private-servers.js";

export const ROOT = fileURLToPath(new URL("../..", import.meta.url));
export const CLI = `${ROOT}services/cli/dist/main.js`;
export const DEFAULT_DATABASE_URL = process.env["TEST_DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/test";
export const NATS_URL = process.env["TEST_NATS_URL"] ?? "nats://127.0.0.1:4222";
/** Extra node flags for the service processes, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof" to profile them. */
const NODE_ARGS = (process.env["STEPWISE_SERVICE_NODE_ARGS"] ?? "").split(" ").filter((a) => a !== "");

type Service = "ingest" | "scheduler" | "executor";

/** One more process of a service, next to the stack's own (see Stack.startExtra). */
export interface ExtraService {
  readonly name: Service;
  readonly proc: ChildProcess;
  readonly log: string[];
  /** The port it serves on (ingest, executor); 0 for a scheduler (it serves /metrics on a free port of its own). */
  readonly port: number;
  /** Sends a signal and waits for the process to be gone. */
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/**
 * The engine as a user deploys it: ingest, scheduler and executor as
 * separate `stepwise start` processes against the real Postgres and NATS,
 * in a schema and a stream prefix of their own, removed by stop().
 */
export class Stack implements LiveStack {
  /** Each service's log lines (the stack's own, then its extras), for a failed test's report. */
  serviceLogs(): Array<{ name: string; lines: readonly string[] }> {
    return [
      ...[...this.logs].map(([name, lines]) => ({ name, lines })),
      ...[...this.extras].map((e, i) => ({ name: `extra ${e.name} ${i + 1}`, lines: e.log })),
    ];
  }

  readonly id = `t${randomBytes(5).toString("hex")}`;
  readonly schema = `sw_${this.id}`;
  readonly prefix = `sw-${this.id}`;
  ingestPort = 0;
  executorPort = 0;
  /** Where the scheduler serves /healthz and /metrics. */
  schedulerPort = 0;
  readonly procs = new Map<Service, ChildProcess>();
  readonly logs = new Map<Service, string[]>();
  readonly extras = new Set<ExtraService>();
  readonly db: pg.Pool;

  readonly natsUrl: string;
  readonly databaseUrl: string;

  /** The `stepwise` command the services run from: the built CLI of this checkout, unless given. */
  private readonly cli: string;

  constructor(
    private readonly env: Record<string, string> = {},
    options: { cli?: string } = {},
  ) {
    this.cli = options.cli ?? CLI;
    this.natsUrl = env["NATS_URL"] ?? NATS_URL;
    this.databaseUrl = env["DATABASE_URL"] ?? DEFAULT_DATABASE_URL;
    this.db = new pg.Pool({ connectionString: this.databaseUrl, max: 2, options: `-c search_path=${this.schema}` });
    this.db.on("error", () => {});
  }

  /** https when the stack serves TLS (STEPWISE_TLS_CERT_FILE given), http otherwise. */
  private get scheme(): string {
    return this.env["STEPWISE_TLS_CERT_FILE"] ? "https" : "http";
  }

  get ingestUrl(): string {
    return `${this.scheme}://127.0.0.1:${this.ingestPort}`;
  }

  get executorUrl(): string {
    return `${this.scheme}://127.0.0.1:${this.executorPort}`;
  }

  get schedulerUrl(): string {
    return `http://127.0.0.1:${this.schedulerPort}`;
  }

  async start(): Promise<this> {
    liveStacks.add(this);
    this.ingestPort = await freePort();
    this.executorPort = await freePort();
    this.schedulerPort = await freePort();
    // Migrate once up front so the services do not race on a fresh schema in the logs.
    await this.run(["migrate"]);
    await Promise.all((["ingest", "scheduler", "executor"] as const).map((s) => this.startOnFreePort(s)));
    return this;
  }

  /**
   * Starts a service at start(), on another free port if its port was taken
   * between freePort() and the service's listen (tests run side by side):
   * up to three tries.
   */
  private async startOnFreePort(name: Service): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.startService(name);
      } catch (err) {
        if (attempt >= 3 || !String(err).includes("EADDRINUSE")) throw err;
        const port = await freePort();
        if (name === "ingest") this.ingestPort = port;
        else if (name === "executor") this.executorPort = port;
        else this.schedulerPort = port;
      }
    }
  }

  private baseEnv(): NodeJS.ProcessEnv {
    return {
      ...process.env,
      DATABASE_URL: this.databaseUrl,
      DATABASE_SCHEMA: this.schema,
      DATABASE_POOL_SIZE: "8",
      NATS_URL: this.natsUrl,
      STEPWISE_PREFIX: this.prefix,
      HOST: "127.0.0.1",
      INGEST_PORT: String(this.ingestPort),
      EXECUTOR_PORT: String(this.executorPort),
      SCHEDULER_PORT: String(this.schedulerPort),
      STEPWISE_LEASE_MS: "2000",
      STEPWISE_RECONCILE_INTERVAL_MS: "250",
      STEPWISE_HEARTBEAT_MS: "1000",
      LOG_LEVEL: "info",
      // Keyless calls, as most tests make them; test/auth.test.ts turns keys on.
      STEPWISE_INSECURE: "true",
      ...this.env,
    };
  }

  /** Runs the `stepwise` CLI against this stack's journal (DATABASE_URL, DATABASE_SCHEMA) and services. */
  stepwise(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
    return new Promise((resolve) => {
      const p = spawn(process.execPath, [this.cli, ...args], {
        env: { ...this.baseEnv(), STEPWISE_URL: this.ingestUrl, ...env },
        stdio: ["ignore", "pipe", "pipe"],
      });
      let stdout = "";
      let stderr = "";
      p.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
      p.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
      p.on("exit", (code) => resolve({ code, stdout, stderr }));
    });
  }

  private run(args: string[]): Promise<void> {
    return new Promise((resolve, reject) => {
      const p = spawn(process.execPath, [this.cli, ...args], { env: this.baseEnv(), stdio: ["ignore", "pipe", "pipe"] });
      let out = "";
      p.stdout.on("data", (d: Buffer) => (out += d.toString()));
      p.stderr.on("data", (d: Buffer) => (out += d.toString()));
      p.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`stepwise ${args.join(" ")} exited ${code}: ${out}`))));
    });
  }

  /** Starts (or restarts) one service and waits until it serves. */
  async startService(name: Service): Promise<void> {
    const p = spawn(process.execPath, [...NODE_ARGS, this.cli, "start", name], { env: this.baseEnv(), stdio: ["ignore", "pipe", "pipe"] });
    const log: string[] = this.logs.get(name) ?? [];
    this.logs.set(name, log);
    this.procs.set(name, p);
    await waitForOutput(p, `"${name} started"`, name, 20_000, log);
  }

  /**
   * Starts one more process of a service on the same database and NATS
   * prefix (an ingest or executor gets a port of its own), as scaling out
   * does. stop() kills it; kill() on the handle ends it earlier.
   */
  async startExtra(name: Service): Promise<ExtraService> {
    const port = name === "scheduler" ? 0 : await freePort();
    const env = {
      ...this.baseEnv(),
      ...(name === "ingest" ? { INGEST_PORT: String(port) } : {}),
      ...(name === "executor" ? { EXECUTOR_PORT: String(port) } : {}),
      ...(name === "scheduler" ? { SCHEDULER_PORT: "0" } : {}),
    };
    const proc = spawn(process.execPath, [...NODE_ARGS, this.cli, "start", name], { env, stdio: ["ignore", "pipe", "pipe"] });
    const log: string[] = [];
    const extra: ExtraService = {
      name,
      proc,
      log,
      port,
      kill: async (signal: NodeJS.Signals = "SIGKILL") => {
        await killProcess(proc, signal);
        this.extras.delete(extra);
      },
    };
    this.extras.add(extra);
    await waitForOutput(proc, `"${name} started"`, `extra ${name}`, 20_000, log);
    return extra;
  }

  /**
   * True once the scheduler has handled (and acked) every event in the
   * event stream: nothing pending, nothing awaiting an ack. After it, an
   * event that made no run will make none.
   */
  async eventsSettled(): Promise<boolean> {
    const nc = await connect({ servers: this.natsUrl.split(",") });
    try {
      const jsm = await jetstreamManager(nc);
      const upper = this.prefix.toUpperCase().replace(/[^A-Z0-9_-]/g, "_");
      const stream = await jsm.streams.info(`${upper}_EVENTS`);
      const consumer = await jsm.consumers.info(`${upper}_EVENTS`, `${this.prefix}-scheduler`.replace(/[.*>]/g, "_"));
      return consumer.num_pending === 0 && consumer.num_ack_pending === 0 && consumer.ack_floor.stream_seq >= stream.state.last_seq;
    } finally {
      await nc.close();
    }
  }

  /** Kills one service with a signal and waits for it to be gone. */
  async kill(name: Service, signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    await killProcess(this.procs.get(name), signal);
    this.procs.delete(name);
  }

  async stop(): Promise<void> {
    liveStacks.delete(this);
    stoppedStacks.push(this);
    await Promise.all([...this.procs.keys()].map((s) => this.kill(s, "SIGKILL")));
    await Promise.all([...this.extras].map((e) => e.kill("SIGKILL")));
    await this.db.end();
    const admin = new pg.Client({ connectionString: this.databaseUrl });
    await admin.connect();
    await admin.query(`DROP SCHEMA IF EXISTS ${this.schema} CASCADE`);
    // And those of the environments besides default (environmentPlace): ${schema}_env_NAME, ${prefix}-env-NAME.
    const envSchemas = await admin.query<{ name: string }>("SELECT nspname AS name FROM pg_namespace WHERE starts_with(nspname, $1)", [`${this.schema}_env_`]);
    for (const { name } of envSchemas.rows) await admin.query(`DROP SCHEMA IF EXISTS "${name}" CASCADE`);
    await admin.end();
    const nc = await connect({ servers: this.natsUrl.split(",") });
    const jsm = await jetstreamManager(nc);
    const upper = this.prefix.toUpperCase().replace(/[^A-Z0-9_-]/g, "_");
    for (const s of [`${upper}_EVENTS`, `${upper}_WORK`]) await jsm.streams.delete(s).catch(() => false);
    for await (const name of jsm.streams.names()) if (name.startsWith(`${upper}-ENV-`)) await jsm.streams.delete(name).catch(() => false);
    await nc.close();
  }

  /** Message count of the event stream. */
  async eventStreamCount(): Promise<number> {
    const nc = await connect({ servers: this.natsUrl.split(",") });
    try {
      const jsm = await jetstreamManager(nc);
      const upper = this.prefix.toUpperCase().replace(/[^A-Z0-9_-]/g, "_");
      const info = await jsm.streams.info(`${upper}_EVENTS`);
      return info.state.messages;
    } finally {
      await nc.close();
    }
  }

  async query<T extends pg.QueryResultRow>(text: string, params: unknown[] = []): Promise<T[]> {
    return (await this.db.query<T>(text, params)).rows;
  }
}

/** Polls until fn returns a value that is not undefined, or fails after timeoutMs. */
export async function eventually<T>(fn: () => Promise<T | undefined>, timeoutMs = 20_000, what = "condition"): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${lastErr ? `: ${String(lastErr)}` : ""}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A promise with its resolver, for steps a test holds open. */
export function gate<T = void>(): { promise: Promise<T>; open: (v: T) => void } {
  let open!: (v: T) => void;
  const promise = new Promise<T>((r) => (open = r));
  return { promise, open };
}

/** Asserts the end state of a chaos test: every run COMPLETED, each step key journaled once. */
export async function expectEveryRunCompletedOnce(stack: Stack, runs: number, stepsPerRun: number): Promise<void> {
  const { expect } = await import("vitest");
  await eventually(async () => {
    const rows = await stack.query<{ n: string }>("SELECT count(*) AS n FROM runs WHERE status = 'COMPLETED'");
    return Number(rows[0]!.n) === runs ? true : undefined;
  }, 60_000, `all ${runs} runs to complete`);
  const dupes = await stack.query("SELECT run_id, step_key FROM steps GROUP BY run_id, step_key HAVING count(*) > 1");
  expect(dupes).toEqual([]);
  const steps = await stack.query<{ n: string }>("SELECT count(*) AS n FROM steps");
  expect(Number(steps[0]!.n)).toBe(runs * stepsPerRun);
  const all = await stack.query<{ n: string }>("SELECT count(*) AS n FROM runs");
  expect(Number(all[0]!.n)).toBe(runs);
}

/** The one run an event started, once it is in `status`. */
export function runOfEventIn(
  client: { listRunsOfEvent(eventId: string): Promise<Array<{ status: string }>> },
  eventId: string,
  status: string,
  timeoutMs = 20_000,
): Promise<RunInfo> {
  return eventually(
    async () => {
      const [run] = await client.listRunsOfEvent(eventId);
      return run?.status === status ? (run as RunInfo) : undefined;
    },
    timeoutMs,
    `the run of ${eventId} to be ${status}`,
  );
}
