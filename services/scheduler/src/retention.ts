import type { JournalStore, Logger } from "@stepwise/core";

/** Runs (or events) one statement deletes. */
export const RETENTION_BATCH = 500;

/**
 * Pause between two batches of one sweep, so the deletion yields to the
 * hot path: at least this long, and at least PAUSE_PER_BATCH times as long
 * as the batch took, so a sweep holds Postgres a third of the time at most
 * and slows down when Postgres is busy.
 */
const BATCH_PAUSE_MS = 50;
const PAUSE_PER_BATCH = 9;

/** Between sweeps: a sweep that left nothing to delete waits this long. */
export const RETENTION_SWEEP_MS = 60_000;

/**
 * Deletes what retention lets go (STEPWISE_RETENTION): runs that ended
 * longer ago than the retention, then the events no run refers to, in
 * batches of RETENTION_BATCH with a pause between them. Each scheduler
 * runs one; their batches skip each other's rows. The first sweep is one
 * interval after start.
 */
export class RetentionSweeper {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;

  constructor(
    private readonly deps: {
      store: JournalStore;
      log: Logger;
      retentionMs: number;
      sweepMs?: number;
      batch?: number;
    },
  ) {}

  start(): void {
    const every = this.deps.sweepMs ?? RETENTION_SWEEP_MS;
    const tick = () => {
      this.running = this.sweep()
        .then(() => undefined)
        .catch((err: unknown) => this.deps.log.warn({ err }, "retention sweep failed"))
        .finally(() => {
          this.running = undefined;
          if (!this.stopped) this.timer = setTimeout(tick, every);
        });
    };
    this.timer = setTimeout(tick, every);
  }

  /** One sweep until nothing is left to delete; returns what it deleted. */
  async sweep(): Promise<{ runs: number; events: number }> {
    const batch = this.deps.batch ?? RETENTION_BATCH;
    const runs = await this.drain(() => this.deps.store.deleteEndedRuns(this.deps.retentionMs, batch), batch);
    const events = await this.drain(() => this.deps.store.deleteUnreferencedEvents(this.deps.retentionMs, batch), batch);
    if (runs > 0 || events > 0) this.deps.log.info({ runs, events, retentionMs: this.deps.retentionMs }, "retention deleted ended runs and unreferenced events");
    return { runs, events };
  }

  private async drain(once: () => Promise<number>, batch: number): Promise<number> {
    let total = 0;
    while (!this.stopped) {
      const started = performance.now();
      const n = await once();
      total += n;
      if (n < batch) break;
      const pause = Math.max(BATCH_PAUSE_MS, PAUSE_PER_BATCH * (performance.now() - started));
      await new Promise((r) => setTimeout(r, pause));
    }
    return total;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }
}
