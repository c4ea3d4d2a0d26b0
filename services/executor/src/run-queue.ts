import { publishQueuedRuns, type Bus, type JournalStore, type Logger, type PublishedRunRef } from "@stepwise/core";

/**
 * Puts runs (back) on the queue from the executor: a run handed back by a
 * worker that went away, or by a claim that cannot start here, and the new
 * runs an executor's statements create (an onFailure run, a run woken at
 * once by its suspension). Each gets its work published and the publish
 * confirmed in the journal; a publish that fails is left to the
 * scheduler's reconciler, whose deadline the run carries until confirmed.
 */
export class RunQueue {
  constructor(
    private readonly options: {
      store: JournalStore;
      bus: Bus;
      log: Logger;
      /** When the reconciler publishes a requeued run's work again if the publish here was lost. */
      requeueAfterMs: number;
      /** When a run waiting in the queue has its work published once more. */
      queuedBackstopMs?: number | undefined;
    },
  ) {}

  /** Publishes the work of runs QUEUED with a short deadline and confirms it. */
  async publish(runs: PublishedRunRef[]): Promise<void> {
    try {
      await publishQueuedRuns(this.options.bus, this.options.store, runs, this.options.queuedBackstopMs);
    } catch (err) {
      this.options.log.warn({ err, runs: runs.length }, "publishing run work failed; the reconciler publishes it");
    }
  }

  /** Hands a run this executor holds back to the queue; nothing when its lease was lost meanwhile. */
  async requeue(runId: string, lease: number, appId: string, functionId: string): Promise<void> {
    try {
      const ok = await this.options.store.requeueRun(runId, lease, this.options.requeueAfterMs);
      if (!ok) return;
      await publishQueuedRuns(this.options.bus, this.options.store, [{ runId, appId, functionId, lease }], this.options.queuedBackstopMs);
    } catch (err) {
      // The lease lapses, or the requeue deadline passes, and the reconciler hands the run on.
      this.options.log.warn({ err, run: runId }, "handing a run back failed");
    }
  }
}
