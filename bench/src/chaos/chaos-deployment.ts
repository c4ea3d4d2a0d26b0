// What the chaos suite starts for itself: a private Postgres, a private
// three-node NATS cluster, `stepwise migrate`, the services as processes
// (each restartable) and the worker processes. Everything on loopback
// ports, every process's output in the log folder.
import { appendFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import pg from "pg";
import { ManagedProcess } from "../managed-process.js";
import { NatsCluster, PrivatePostgres, freePort, type NatsNode } from "../private-servers.js";
import type { ChaosOptions } from "./chaos-options.js";
import { executionLogFile } from "./execution-log.js";
import type { Supervisor } from "./supervisor.js";

const CLI = fileURLToPath(new URL("../../../services/cli/dist/main.js", import.meta.url));
const WORKER = fileURLToPath(new URL("./chaos-worker.js", import.meta.url));

export const SCHEMA = "chaos";
export const PREFIX = "chaos";

type Service = "ingest" | "scheduler" | "executor";

/** One service process (executor-1, …), restartable; each start is a new incarnation with its own log. */
export class ServiceProcess {
  proc: ManagedProcess | undefined;
  incarnation = 0;
  /** SIGSTOPped and not yet continued. */
  frozen = false;

  constructor(
    readonly name: string,
    readonly service: Service,
    /** Its port (ingest, executor); 0 for a scheduler, which takes a free one. */
    readonly port: number,
    private readonly env: () => NodeJS.ProcessEnv,
    private readonly logDir: string,
    private readonly supervisor: Supervisor,
  ) {}

  get running(): boolean {
    return this.proc?.running ?? false;
  }

  get pid(): number | undefined {
    return this.proc?.child.pid;
  }

  /** Starts a new incarnation and waits until it serves. */
  async start(timeoutMs = 60_000): Promise<void> {
    const env = {
      ...this.env(),
      ...(this.service === "ingest" ? { INGEST_PORT: String(this.port) } : {}),
      ...(this.service === "executor" ? { EXECUTOR_PORT: String(this.port) } : {}),
      ...(this.service === "scheduler" ? { SCHEDULER_PORT: "0" } : {}),
    };
    this.frozen = false;
    const proc = ManagedProcess.node(`${this.name}.${++this.incarnation}`, [CLI, "start", this.service], { env, logDir: this.logDir });
    this.proc = proc;
    await killOnFailure(proc, proc.waitForOutput(`"${this.service} started"`, timeoutMs), this.supervisor);
    this.supervisor.watch(proc.name, proc.child, () => proc.tail(), () => this.start());
  }

  /** Sends a signal; for SIGKILL, waits until the process is gone. */
  async signal(sig: NodeJS.Signals): Promise<void> {
    const proc = this.proc;
    if (!proc?.running) return;
    if (sig === "SIGKILL") this.supervisor.expect(proc.child.pid);
    proc.child.kill(sig);
    if (sig === "SIGSTOP") this.frozen = true;
    if (sig === "SIGCONT") this.frozen = false;
    if (sig === "SIGKILL") await proc.waitForExit(30_000);
  }
}

/** A worker process slot (worker-1, …), connected to one executor; each start is a new process with its own execution log. */
export class WorkerSlot {
  proc: ManagedProcess | undefined;
  incarnation = 0;

  constructor(
    readonly name: string,
    readonly executor: ServiceProcess,
    private readonly options: ChaosOptions,
    private readonly logDir: string,
    /** Called with the pid of every process started, before it runs a step. */
    private readonly onPid: (pid: number, slot: WorkerSlot) => void,
    private readonly supervisor: Supervisor,
  ) {}

  get running(): boolean {
    return this.proc?.running ?? false;
  }

  get pid(): number | undefined {
    return this.proc?.child.pid;
  }

  /** Starts a new worker process and waits until it registered (its executor may be down meanwhile). */
  async start(timeoutMs = 60_000): Promise<void> {
    const incarnation = ++this.incarnation;
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      CHAOS_EXECUTOR_URL: `http://127.0.0.1:${this.executor.port}`,
      CHAOS_EXEC_LOG: executionLogFile(this.logDir, this.name, incarnation),
      CHAOS_WORKER_CAPACITY: String(this.options.capacity),
      CHAOS_STEP_WORK_MS: `${this.options.stepWorkMs[0]}-${this.options.stepWorkMs[1]}`,
    };
    this.proc = ManagedProcess.node(`${this.name}.${incarnation}`, [WORKER], { env, logDir: this.logDir });
    const proc = this.proc;
    this.onPid(proc.pid, this);
    await killOnFailure(proc, proc.waitForOutput("worker-ready", timeoutMs), this.supervisor);
    this.supervisor.watch(proc.name, proc.child, () => proc.tail(), () => this.start());
  }

  async kill(): Promise<void> {
    const proc = this.proc;
    if (!proc?.running) return;
    this.supervisor.expect(proc.child.pid);
    proc.child.kill("SIGKILL");
    await proc.waitForExit(30_000);
  }
}

/** Awaits a start; if it fails, kills the process so that a retry does not find it in the way. */
async function killOnFailure(proc: ManagedProcess, started: Promise<void>, supervisor: Supervisor): Promise<void> {
  try {
    await started;
  } catch (err) {
    supervisor.expect(proc.child.pid);
    if (proc.running) {
      proc.child.kill("SIGKILL");
      await proc.waitForExit(10_000);
    }
    throw err;
  }
}

/** How the streams and consumers were created: the replicas JetStream reports. */
export interface StreamReplicas {
  events: number | undefined;
  work: number | undefined;
  consumers: Record<string, number | undefined>;
}

/** The whole deployment. */
export class ChaosDeployment {
  postgres = new PrivatePostgres();
  nats: NatsCluster | undefined;
  readonly services: ServiceProcess[] = [];
  readonly workers: WorkerSlot[] = [];
  /** Every worker process ever started, by pid. */
  readonly workerPids = new Map<number, WorkerSlot>();
  private readonly natsIncarnations = new Map<string, number>();
  private pgIncarnation = 0;

  constructor(
    private readonly options: ChaosOptions,
    readonly logDir: string,
    readonly supervisor: Supervisor,
  ) {}

  get executors(): ServiceProcess[] {
    return this.services.filter((s) => s.service === "executor");
  }

  get schedulers(): ServiceProcess[] {
    return this.services.filter((s) => s.service === "scheduler");
  }

  get ingests(): ServiceProcess[] {
    return this.services.filter((s) => s.service === "ingest");
  }

  get ingestUrls(): string[] {
    return this.ingests.map((s) => `http://127.0.0.1:${s.port}`);
  }

  async start(): Promise<void> {
    const o = this.options;
    await this.postgres.init();
    await this.startPostgres();
    this.nats = await NatsCluster.start(3);
    for (const node of this.nats.nodes) {
      this.natsIncarnations.set(node.name, 1);
      this.watchNats(node);
    }

    const migrate = ManagedProcess.node("migrate", [CLI, "migrate"], { env: this.env(), logDir: this.logDir });
    await migrate.waitForExit(60_000);
    if (migrate.child.exitCode !== 0) throw new Error(`stepwise migrate failed:\n${migrate.tail()}`);

    const add = async (service: Service, count: number) => {
      for (let i = 1; i <= count; i++) {
        const port = service === "scheduler" ? 0 : await freePort();
        this.services.push(new ServiceProcess(`${service}-${i}`, service, port, () => this.env(), this.logDir, this.supervisor));
      }
    };
    await add("scheduler", o.schedulers);
    await add("executor", o.executors);
    await add("ingest", o.ingests);
    // One at a time: on two cores, starting seven Node processes at once takes longer than one after the other.
    for (const s of this.services) await s.start();
    const executors = this.executors;
    for (let i = 1; i <= o.workers; i++) {
      this.workers.push(new WorkerSlot(`worker-${i}`, executors[(i - 1) % executors.length]!, o, this.logDir, (pid, slot) => this.workerPids.set(pid, slot), this.supervisor));
    }
    await Promise.all(this.workers.map((w) => w.start()));
  }

  /** Starts the Postgres again, retrying while the killed one's backends still hold its shared memory. */
  async startPostgres(timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const file = join(this.logDir, "postgres.log");
    for (;;) {
      try {
        await this.postgres.start();
        const proc = this.postgres.proc!;
        const n = ++this.pgIncarnation;
        appendFileSync(file, `--- postgres incarnation ${n} (pid ${proc.pid}) ready at ${new Date().toISOString()}\n`);
        const onData = (d: Buffer) => appendFileSync(file, d);
        proc.stdout!.on("data", onData);
        proc.stderr!.on("data", onData);
        this.supervisor.watch("postgres", proc, () => "", () => this.startPostgres());
        return;
      } catch (err) {
        await this.killPostgres();
        appendFileSync(file, `--- postgres failed to start at ${new Date().toISOString()}: ${String(err)}\n`);
        if (Date.now() > deadline) throw err;
        await sleep(500);
      }
    }
  }

  /** kill -9 of the postmaster. */
  async killPostgres(): Promise<void> {
    this.supervisor.expect(this.postgres.proc?.pid);
    await this.postgres.kill();
  }

  /** kill -9 of a NATS node; its output so far goes to its log. */
  async killNats(node: NatsNode): Promise<void> {
    this.supervisor.expect(node.proc?.pid);
    await node.kill();
    this.saveNatsLog(node);
  }

  async startNats(node: NatsNode): Promise<void> {
    this.natsIncarnations.set(node.name, (this.natsIncarnations.get(node.name) ?? 0) + 1);
    try {
      await node.start();
    } catch (err) {
      await this.killNats(node);
      throw err;
    }
    this.watchNats(node);
  }

  private watchNats(node: NatsNode): void {
    this.supervisor.watch(`nats-${node.name}`, node.proc!, () => node.log.join(""), () => this.startNats(node));
  }

  private saveNatsLog(node: NatsNode): void {
    const n = this.natsIncarnations.get(node.name) ?? 0;
    appendFileSync(join(this.logDir, `nats-${node.name}.log`), `--- incarnation ${n}\n${node.log.join("")}`);
    node.log.length = 0;
  }

  /** The replicas of the streams and consumers, as JetStream reports them. */
  async streamReplicas(): Promise<StreamReplicas> {
    const nc = await connect({ servers: this.nats!.url.split(",") });
    try {
      const jsm = await jetstreamManager(nc, { timeout: 5_000 });
      const info = async (name: string) => (await jsm.streams.info(name).catch(() => undefined))?.config.num_replicas;
      const upper = PREFIX.toUpperCase();
      const consumers: Record<string, number | undefined> = {};
      for (const stream of [`${upper}_EVENTS`, `${upper}_WORK`]) {
        for await (const c of jsm.consumers.list(stream)) consumers[`${stream}/${c.name}`] = c.config.num_replicas || undefined;
      }
      return { events: await info(`${upper}_EVENTS`), work: await info(`${upper}_WORK`), consumers };
    } finally {
      await nc.close();
    }
  }

  /** A pool on the deployment's schema, for the checks. */
  pool(): pg.Pool {
    const pool = new pg.Pool({ connectionString: this.postgres.url, max: 2, options: `-c search_path=${SCHEMA}` });
    pool.on("error", () => {});
    return pool;
  }

  /** Kills every process it started and deletes the servers' folders. */
  async stop(): Promise<void> {
    this.supervisor.stop();
    const procs = [...this.services.map((s) => s.proc), ...this.workers.map((w) => w.proc)];
    await Promise.all(
      procs.map(async (p) => {
        if (!p?.running) return;
        p.child.kill("SIGKILL");
        await p.waitForExit(10_000);
      }),
    );
    if (this.nats) {
      for (const node of this.nats.nodes) if (node.running) this.saveNatsLog(node);
      await this.nats.stop();
    }
    await this.postgres.stop();
  }

  /** Last resort on exit: SIGKILL of every child still running, synchronously. */
  killAllNow(): void {
    const alive = (p: { pid?: number | undefined; exitCode: number | null; signalCode: string | null } | undefined) =>
      p && p.exitCode === null && p.signalCode === null ? p.pid : undefined;
    const pids = [
      ...this.services.map((s) => alive(s.proc?.child)),
      ...this.workers.map((w) => alive(w.proc?.child)),
      ...(this.nats?.nodes.map((n) => alive(n.proc)) ?? []),
      alive(this.postgres.proc),
    ];
    for (const pid of pids) {
      if (pid === undefined) continue;
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
  }

  env(): NodeJS.ProcessEnv {
    const o = this.options;
    return {
      ...process.env,
      DATABASE_URL: this.postgres.url,
      DATABASE_SCHEMA: SCHEMA,
      DATABASE_POOL_SIZE: "5",
      NATS_URL: this.nats?.url ?? "",
      STEPWISE_PREFIX: PREFIX,
      STEPWISE_NATS_REPLICAS: "3",
      STEPWISE_LEASE_MS: String(o.leaseMs),
      STEPWISE_RECONCILE_INTERVAL_MS: String(o.reconcileMs),
      STEPWISE_HEARTBEAT_MS: String(o.heartbeatMs),
      HOST: "127.0.0.1",
      LOG_LEVEL: process.env["LOG_LEVEL"] ?? "info",
      // The chaos load's clients and workers send no key.
      STEPWISE_INSECURE: "true",
    };
  }
}
