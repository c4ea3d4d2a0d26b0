// Injects faults at random for the duration: at exponentially distributed
// gaps (a Poisson process of --fault-rate per minute), a kind drawn by its
// weight among the kinds that have a target up at that moment. Each fault
// takes its part down, waits a random while, brings it back and records
// when; faults may overlap, except that at most one NATS node is down at a
// time (a majority stays up) and a NATS node goes down only once the last
// one restarted has had NATS_REST_MS to catch up.
import { setTimeout as sleep } from "node:timers/promises";
import type { NatsNode } from "../private-servers.js";
import type { ChaosDeployment, ServiceProcess, WorkerSlot } from "./chaos-deployment.js";
import { FAULT_WEIGHTS, type FaultKind } from "./fault-kinds.js";
import type { Random } from "./random.js";

/** One fault, as the fault log keeps it. */
export interface FaultRecord {
  id: number;
  kind: FaultKind;
  /** The process or server faulted: executor-1, worker-2, nats n3, postgres. */
  target: string;
  /** Pid of the process faulted (services, workers). */
  pid: number | undefined;
  /** For a worker: the executor it was connected to. */
  executor: string | undefined;
  /** When the part went down (ms since the epoch). */
  at: number;
  /** When it was back: serving again, registered, continued. Undefined: never. */
  restoredAt: number | undefined;
  /** restoredAt - at: the time D it was down. */
  downMs: number | undefined;
  /** Problems while bringing it back (retried). */
  errors: string[];
  /** Not injected: a process that died on its own (see supervisor.ts), as a window for the duplicate check. */
  crash?: true;
}

const NATS_REST_MS = 10_000;

export class FaultInjector {
  readonly faults: FaultRecord[] = [];
  private readonly busy = new Set<string>();
  private readonly active = new Set<Promise<void>>();
  private lastNatsRestore = 0;
  private stopped = false;

  constructor(
    private readonly deployment: ChaosDeployment,
    private readonly kinds: readonly FaultKind[],
    private readonly faultsPerMinute: number,
    private readonly leaseMs: number,
    private readonly random: Random,
    private readonly log: (line: string) => void,
  ) {}

  /** Injects faults for durationMs, then waits until every faulted part is back. */
  async run(durationMs: number): Promise<void> {
    const end = Date.now() + durationMs;
    if (this.faultsPerMinute > 0) {
      const mean = 60_000 / this.faultsPerMinute;
      for (;;) {
        const gap = this.random.exponential(mean);
        if (Date.now() + gap >= end) break;
        await sleep(gap);
        if (this.stopped) break;
        const choices = this.kinds.filter((k) => this.targets(k).length > 0);
        if (choices.length === 0) continue;
        const kind = this.random.weighted(choices, (k) => FAULT_WEIGHTS[k]);
        const p = this.inject(kind).finally(() => this.active.delete(p));
        this.active.add(p);
      }
      const rest = end - Date.now();
      if (rest > 0 && !this.stopped) await sleep(rest);
    }
    await this.settled();
  }

  /** Stops drawing faults (Ctrl-C). */
  stop(): void {
    this.stopped = true;
  }

  /** Resolves once every fault in progress brought its part back. */
  async settled(): Promise<void> {
    while (this.active.size > 0) await Promise.allSettled([...this.active]);
  }

  private targets(kind: FaultKind): string[] {
    const d = this.deployment;
    const free = (name: string) => !this.busy.has(name);
    switch (kind) {
      case "executor-kill":
      case "executor-stop":
        return d.executors.filter((s) => s.running && !s.frozen && free(s.name)).map((s) => s.name);
      case "scheduler-kill":
        return d.schedulers.filter((s) => s.running && free(s.name)).map((s) => s.name);
      case "ingest-kill":
        return d.ingests.filter((s) => s.running && free(s.name)).map((s) => s.name);
      case "worker-kill":
        return d.workers.filter((w) => w.running && free(w.name)).map((w) => w.name);
      case "nats-kill":
      case "nats-wipe": {
        const nodes = d.nats!.nodes;
        const allUp = nodes.every((n) => n.running && free(`nats-${n.name}`));
        return allUp && Date.now() - this.lastNatsRestore >= NATS_REST_MS ? nodes.map((n) => `nats-${n.name}`) : [];
      }
      case "postgres-restart":
        return free("postgres") && d.postgres.proc?.exitCode === null ? ["postgres"] : [];
    }
  }

  private async inject(kind: FaultKind): Promise<void> {
    const target = this.random.pick(this.targets(kind));
    this.busy.add(target);
    const record: FaultRecord = {
      id: this.faults.length + 1,
      kind,
      target,
      pid: undefined,
      executor: undefined,
      at: 0,
      restoredAt: undefined,
      downMs: undefined,
      errors: [],
    };
    this.faults.push(record);
    // Drawn now, so that the draws follow the seed whatever the timing.
    const pause = kind === "executor-stop" ? this.leaseMs + this.random.between(1_000, 3_000) : this.random.between(500, 3_000);
    const natsPause = this.random.between(1_000, 5_000);
    const pgPause = this.random.between(1_000, 4_000);
    try {
      switch (kind) {
        case "executor-kill":
        case "scheduler-kill":
        case "ingest-kill":
          await this.killService(record, this.service(target), pause);
          break;
        case "executor-stop":
          await this.stopService(record, this.service(target), pause);
          break;
        case "worker-kill":
          await this.killWorker(record, this.worker(target), pause);
          break;
        case "nats-kill":
        case "nats-wipe":
          await this.killNats(record, this.deployment.nats!.node(target.slice("nats-".length)), kind === "nats-wipe", natsPause);
          break;
        case "postgres-restart":
          await this.restartPostgres(record, pgPause);
          break;
      }
    } finally {
      this.busy.delete(target);
    }
    if (record.restoredAt !== undefined) record.downMs = record.restoredAt - record.at;
    this.log(
      `fault ${record.id} ${kind} ${target}: down ${record.downMs === undefined ? "and not back" : `${(record.downMs / 1000).toFixed(1)} s`}` +
        (record.errors.length ? ` (${record.errors.length} failed restarts)` : ""),
    );
  }

  private service(name: string): ServiceProcess {
    return this.deployment.services.find((s) => s.name === name)!;
  }

  private worker(name: string): WorkerSlot {
    return this.deployment.workers.find((w) => w.name === name)!;
  }

  /** Retries start() until it works; records each failure. */
  private async bringBack(record: FaultRecord, start: () => Promise<void>): Promise<void> {
    for (let i = 0; i < 5; i++) {
      try {
        await start();
        record.restoredAt = Date.now();
        return;
      } catch (err) {
        record.errors.push(`${new Date().toISOString()} ${String((err as Error).message ?? err).slice(0, 2000)}`);
        await sleep(1_000);
      }
    }
  }

  private async killService(record: FaultRecord, s: ServiceProcess, pause: number): Promise<void> {
    record.pid = s.pid;
    record.at = Date.now();
    await s.signal("SIGKILL");
    await sleep(pause);
    await this.bringBack(record, () => s.start());
  }

  private async stopService(record: FaultRecord, s: ServiceProcess, pause: number): Promise<void> {
    record.pid = s.pid;
    record.at = Date.now();
    await s.signal("SIGSTOP");
    await sleep(pause);
    await s.signal("SIGCONT");
    record.restoredAt = Date.now();
  }

  private async killWorker(record: FaultRecord, w: WorkerSlot, pause: number): Promise<void> {
    record.pid = w.pid;
    record.executor = w.executor.name;
    record.at = Date.now();
    await w.kill();
    await sleep(pause);
    await this.bringBack(record, () => w.start());
  }

  private async killNats(record: FaultRecord, node: NatsNode, wipe: boolean, pause: number): Promise<void> {
    record.pid = node.proc?.pid;
    record.at = Date.now();
    await this.deployment.killNats(node);
    if (wipe) node.wipeStore();
    await sleep(pause);
    await this.bringBack(record, () => this.deployment.startNats(node));
    this.lastNatsRestore = Date.now();
  }

  private async restartPostgres(record: FaultRecord, pause: number): Promise<void> {
    record.pid = this.deployment.postgres.proc?.pid;
    record.at = Date.now();
    await this.deployment.killPostgres();
    await sleep(pause);
    await this.bringBack(record, () => this.deployment.startPostgres());
  }
}
