import { randomUUID } from "node:crypto";
import { hostname } from "node:os";
import type { JournalStore, Logger, WorkerRecord } from "@stepwise/core";
import type { WorkerSession } from "./worker-session.js";

/**
 * Records this executor's connected workers in Postgres, for ListWorkers
 * (the dashboard's Workers page): a row when a worker registers, the slots
 * in use of every worker at each heartbeat interval (one statement for
 * all), and the row's removal when the stream ends. It never writes per
 * step or per run. Writes go one after another, so a heartbeat cannot
 * bring back the row of a stream that ended; a failed write is logged and
 * the next heartbeat writes again.
 */
export class WorkerDirectory {
  private readonly live = new Map<WorkerSession, WorkerRecord>();
  private chain: Promise<void> = Promise.resolve();

  constructor(
    private readonly store: JournalStore,
    private readonly log: Logger,
    private readonly executorId: string,
    /** The executor's heartbeat interval: a row it stops rewriting expires after three. */
    private readonly heartbeatMs: number,
  ) {}

  /** A worker registered; resolves once its row is written (or the write failed). */
  add(session: WorkerSession, sdk: string): Promise<void> {
    const record: WorkerRecord = {
      sessionId: randomUUID(),
      workerId: session.id,
      appId: session.appId,
      functionIds: [...session.functions],
      capacity: session.capacity,
      slotsInUse: 0,
      sdk,
      connectedAt: new Date(),
    };
    this.live.set(session, record);
    return this.write("recording a worker", () => this.store.recordWorkers(this.executor(), [this.current(session, record)]));
  }

  /** Rewrites every connected worker's row with its slots in use: at each heartbeat interval. */
  heartbeat(): Promise<void> {
    if (this.live.size === 0) return Promise.resolve();
    return this.write("recording the workers' heartbeat", () => {
      // Read when the write runs: a stream that ended meanwhile is left out.
      const records = [...this.live].map(([s, r]) => this.current(s, r));
      return records.length === 0 ? Promise.resolve() : this.store.recordWorkers(this.executor(), records);
    });
  }

  /** A worker's stream ended: its row goes. */
  remove(session: WorkerSession): Promise<void> {
    const record = this.live.get(session);
    if (!record) return Promise.resolve();
    this.live.delete(session);
    return this.write("removing a worker's record", () => this.store.removeWorker(record.sessionId));
  }

  private current(session: WorkerSession, record: WorkerRecord): WorkerRecord {
    return { ...record, slotsInUse: session.runs.size };
  }

  private executor() {
    return { executorId: this.executorId, executorHost: HOST, expiresInMs: 3 * this.heartbeatMs };
  }

  private write(what: string, fn: () => Promise<void>): Promise<void> {
    this.chain = this.chain.then(fn).catch((err: unknown) => this.log.warn({ err }, `${what} failed`));
    return this.chain;
  }
}

const HOST = hostname();
