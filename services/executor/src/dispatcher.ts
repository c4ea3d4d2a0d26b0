import { GroupCommit, workRunIds, type Bus, type ClaimedRun, type Delivery, type JournalStore, type Logger, type ServiceMetrics } from "@stepwise/core";
import type { RunWork } from "@stepwise/proto";
import type { RunQueue } from "./run-queue.js";
import { WorkPuller } from "./work-puller.js";
import type { WorkerRegistry } from "./worker-registry.js";
import type { WorkerSession } from "./worker-session.js";

/** What the dispatcher needs from the executor. */
export interface DispatcherOptions {
  store: JournalStore;
  bus: Bus;
  log: Logger;
  registry: WorkerRegistry;
  queue: RunQueue;
  /** The executor's id, which its leases carry. */
  executorId: string;
  leaseMs: number;
  /** True once the executor drains: nothing more is pulled. */
  stopping: () => boolean;
  /** Keeps a promise of the executor's referenced until it settles. */
  track: (p: Promise<unknown>) => void;
  /** Starts a run claimed for a session on its worker. */
  start: (session: WorkerSession, claimed: ClaimedRun) => void;
  /** Where the sizes of the claim batches go. */
  metrics?: ServiceMetrics | undefined;
}

/**
 * Where a worker is chosen for a run. The dispatcher pulls an app's run work
 * only while that app's workers have free slots, keeps the runs of each
 * work message in the app's backlog until a worker has a slot, claims them
 * (the runs of one message in one statement), and starts each on the worker
 * of the app with the most free slots that serves its function.
 */
export class Dispatcher {
  private readonly pullers = new Map<string, WorkPuller>();
  /** Runs pulled but not yet claimed, by app, in the order their messages came. */
  private readonly backlogs = new Map<string, BacklogEntry[]>();
  private readonly claims: GroupCommit<string, ClaimedRun | null>;

  constructor(private readonly options: DispatcherOptions) {
    // Runs delivered together are claimed together, in one statement.
    this.claims = new GroupCommit(
      (ids) => options.store.claimRuns(ids, options.executorId, options.leaseMs),
      (id) => options.store.claimRun(id, options.executorId, options.leaseMs),
      { onBatch: options.metrics?.journal.batchSize("claim") },
    );
  }

  /**
   * Gives runs of an app's backlog to its workers, oldest first, as long as
   * they have free slots, and pulls more work for the slots left. Called
   * whenever a slot may have freed up (a worker connected, a run ended or
   * suspended, a claim came back empty).
   */
  fill(appId: string): void {
    const q = this.backlogs.get(appId);
    while (q && q.length > 0) {
      const entry = q[0]!;
      if (entry.next >= entry.ids.length) {
        q.shift();
        continue;
      }
      const session = this.options.registry.pick(appId, entry.functionId);
      if (!session) {
        if (!this.options.registry.serves(appId, entry.functionId)) {
          // No worker of this app here serves the function (workers of another
          // version, or the worker went away): the message goes back for an
          // executor that has one, without spinning on it (the runs of it
          // claimed here are duplicates there).
          q.shift();
          entry.ids.length = entry.next;
          entry.nakAfterMs = NO_WORKER_RETRY_MS;
          if (entry.pending === 0) entry.delivery.nak(NO_WORKER_RETRY_MS);
          continue;
        }
        break; // Waits for a slot: the next fill() goes on.
      }
      const runId = entry.ids[entry.next++]!;
      entry.pending++;
      session.claiming++;
      this.options.track(this.claimAndStart(appId, entry, session, runId));
    }
    if (q?.length === 0) this.backlogs.delete(appId);
    this.puller(appId).kick();
  }

  /** Keeps the messages waiting in a backlog from being redelivered meanwhile (with each lease renewal). */
  keepBacklogs(): void {
    for (const q of this.backlogs.values()) for (const entry of q) entry.delivery.working();
  }

  /**
   * The executor drains: pulls stop, and the runs pulled but not claimed go
   * back, their messages redelivered to another executor (the runs of them
   * claimed here are then duplicates there).
   */
  async stop(): Promise<void> {
    await Promise.all([...this.pullers.values()].map((p) => p.stop()));
    for (const q of this.backlogs.values()) {
      for (const entry of q) {
        entry.ids.length = entry.next;
        entry.nakAfterMs = 0;
        if (entry.pending === 0) entry.delivery.nak();
      }
    }
    this.backlogs.clear();
  }

  /** Takes a work message: its runs wait in the app's backlog until a worker has a slot. */
  private offer(appId: string, delivery: Delivery<RunWork>): void {
    this.backlog(appId).push({ delivery, functionId: delivery.data.functionId, ids: workRunIds(delivery.data), next: 0, pending: 0 });
    this.fill(appId);
  }

  private backlog(appId: string): BacklogEntry[] {
    let q = this.backlogs.get(appId);
    if (!q) this.backlogs.set(appId, (q = []));
    return q;
  }

  /** Runs of an app's backlog not yet given to a claim. */
  private backlogSize(appId: string): number {
    let n = 0;
    for (const e of this.backlogs.get(appId) ?? []) n += e.ids.length - e.next;
    return n;
  }

  private async claimAndStart(appId: string, entry: BacklogEntry, session: WorkerSession, runId: string): Promise<void> {
    let claimed: ClaimedRun | null = null;
    try {
      claimed = await this.claims.submit(runId);
    } catch (err) {
      this.options.log.warn({ err, run: runId }, "claiming a run failed");
      entry.nakAfterMs = CLAIM_RETRY_MS;
    } finally {
      session.claiming--;
      entry.pending--;
      if (entry.pending === 0 && entry.next >= entry.ids.length) {
        // Redelivered after a failure: the runs claimed meanwhile are then duplicates, which a claim skips.
        if (entry.nakAfterMs !== undefined) entry.delivery.nak(entry.nakAfterMs);
        else entry.delivery.ack();
      }
    }
    if (!claimed) {
      // Finished, held by another live execution (the message was a
      // duplicate), or the claim failed: the slot is free again.
      this.fill(appId);
      return;
    }
    if (session.closed || claimed.appId !== session.appId) {
      await this.options.queue.requeue(claimed.runId, claimed.lease, claimed.appId, claimed.functionId);
      this.fill(appId);
      return;
    }
    this.options.start(session, claimed);
  }

  private puller(appId: string): WorkPuller {
    let p = this.pullers.get(appId);
    if (!p) {
      p = new WorkPuller(
        appId,
        this.options.bus,
        () => (this.options.stopping() ? 0 : this.options.registry.freeSlots(appId) - this.backlogSize(appId)),
        (d) => this.offer(appId, d),
        this.options.log,
      );
      this.pullers.set(appId, p);
    }
    return p;
  }
}

/** A work message whose runs are being claimed. */
interface BacklogEntry {
  delivery: Delivery<RunWork>;
  functionId: string;
  ids: string[];
  /** Index of the next run to claim. */
  next: number;
  /** Claims in progress. */
  pending: number;
  /** Set when the message is to be redelivered (after this delay) instead of acked: a claim failed, or it went back. */
  nakAfterMs?: number;
}

/** When the work of a run whose claim failed (the journal was unreachable) is offered again. */
const CLAIM_RETRY_MS = 1_000;

/** When work no connected worker can serve is offered again. */
const NO_WORKER_RETRY_MS = 2_000;
