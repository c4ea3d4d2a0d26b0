import { fileURLToPath } from "node:url";
import type pg from "pg";
import type { SleepProgress } from "./bench-functions.js";
import { EngineDeployment, profileArgs, type DeploymentOptions } from "./engine-deployment.js";
import { ChildRpc } from "./ipc-rpc.js";
import type { ClientRequest } from "./load-client-process.js";
import { ManagedProcess } from "./managed-process.js";
import type { WorkerRequest } from "./worker-process.js";
import type { ProbeOutput } from "./workload-shapes.js";

/** Options of a session: the deployment's, plus the worker's slots. */
export interface SessionOptions extends DeploymentOptions {
  capacity: number;
}

const WORKER_SCRIPT = fileURLToPath(new URL("./worker-process.js", import.meta.url));
const CLIENT_SCRIPT = fileURLToPath(new URL("./load-client-process.js", import.meta.url));

/**
 * Every process of a benchmark run: the engine's three services, a worker
 * process and a load-generating client process, each separate, and the
 * calls the orchestrator makes to the last two.
 */
export class BenchSession {
  private worker: ManagedProcess | undefined;
  private client: ManagedProcess | undefined;
  private workerRpc: ChildRpc | undefined;
  private clientRpc: ChildRpc | undefined;
  private db: pg.Pool | undefined;
  private closing: Promise<void> | undefined;
  readonly engine: EngineDeployment;
  /** What the worker's SDK offers, from the probe run. */
  capabilities: ProbeOutput = { sleep: false };

  constructor(private readonly options: SessionOptions) {
    this.engine = new EngineDeployment(options);
  }

  /** Deploys the engine, starts the worker and the client, and probes the SDK. Call close() even if it fails. */
  async open(): Promise<void> {
    await this.engine.start();
    const env = {
      ...process.env,
      STEPWISE_URL: this.engine.ingestUrl,
      STEPWISE_EXECUTOR_URL: this.engine.executorUrl,
      BENCH_WORKER_CAPACITY: String(this.options.capacity),
    };
    const node = (name: string, script: string) =>
      ManagedProcess.node(name, [...profileArgs(this.options.cpuProfileDir, name), script], { env, logDir: this.options.logDir, ipc: true });
    this.worker = node("worker", WORKER_SCRIPT);
    this.workerRpc = new ChildRpc(this.worker.child, "worker");
    await this.workerRpc.whenReady(30_000);
    this.client = node("client", CLIENT_SCRIPT);
    this.clientRpc = new ChildRpc(this.client.child, "client");
    await this.clientRpc.whenReady(30_000);
    this.capabilities = await this.callClient<ProbeOutput>({ kind: "probe" });
    this.db = this.engine.pool();
  }

  /** Pids of every benchmark process, by name. */
  pids(): Map<string, number> {
    const pids = new Map<string, number>();
    for (const [name, proc] of this.engine.services) pids.set(name, proc.pid);
    pids.set("worker", this.worker!.pid);
    pids.set("client", this.client!.pid);
    return pids;
  }

  /** Asks the client process to drive (part of) a workload. */
  callClient<R>(req: ClientRequest): Promise<R> {
    return this.clientRpc!.call<R>(req);
  }

  /** The worker's counters of the sleeping workload. */
  sleepProgress(): Promise<SleepProgress> {
    return this.workerRpc!.call<SleepProgress>({ kind: "progress" } satisfies WorkerRequest);
  }

  /**
   * W5: the most handler bodies of the limited function each customer had
   * executing at once in the worker since the last call.
   */
  runningPeaks(): Promise<Record<string, number>> {
    return this.workerRpc!.call<Record<string, number>>({ kind: "running-peaks" } satisfies WorkerRequest);
  }

  /** A pool on the deployment's schema; undefined on the embedded engine, whose PGlite only its process can open. */
  get pool(): pg.Pool | undefined {
    return this.db;
  }

  /** The last output of every process, for an error report. */
  tails(): string {
    const procs = [...this.engine.services.values(), this.worker, this.client].filter((p) => p !== undefined);
    return procs.map((p) => `--- ${p.name} (${p.logFile})\n${p.tail().slice(-2000)}`).join("\n");
  }

  /**
   * Stops the client, the worker and the services, then removes the schema
   * and the streams, whatever state open() reached. Safe to call more than
   * once: later calls wait for the first.
   */
  close(): Promise<void> {
    this.closing ??= this.stopAll();
    return this.closing;
  }

  private async stopAll(): Promise<void> {
    try {
      await this.client?.stop(5_000);
      if (this.worker?.running) {
        await this.workerRpc?.call({ kind: "stop" } satisfies WorkerRequest).catch(() => {});
        if (!(await this.worker.waitForExit(5_000))) await this.worker.stop(2_000);
      }
      await this.engine.stop();
    } finally {
      await this.db?.end().catch(() => {});
      await this.engine.remove();
    }
  }
}
