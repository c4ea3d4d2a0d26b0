import { publishOutboxEvents, publishQueuedRuns, type Bus, type JournalStore, type Logger } from "@stepwise/core";

/**
 * The reconciler closes the gap between a Postgres commit and a NATS
 * publish: runs whose executor stopped renewing its lease, runs handed back
 * to the queue whose publish was not confirmed by their deadline, and, once
 * per long backstop, runs still waiting in the queue (in case the bus lost
 * their message) get their work published again. A duplicate work message
 * is harmless: claiming a run is idempotent. It also publishes the events
 * the engine made (the event outbox) that the process which made them did
 * not get onto the event stream within OUTBOX_GRACE_MS.
 */
export class Reconciler {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;

  constructor(
    private readonly deps: {
      store: JournalStore;
      bus: Bus;
      log: Logger;
      requeueAfterMs: number;
      intervalMs: number;
      backstopMs?: number;
    },
  ) {}

  start(): void {
    const tick = () => {
      this.running = Promise.all([this.sweep(), this.sweepOutbox()])
        .then(() => undefined)
        .catch((err: unknown) => this.deps.log.warn({ err }, "reconciler sweep failed"))
        .finally(() => {
          this.running = undefined;
          if (this.timer !== undefined) this.timer = setTimeout(tick, this.deps.intervalMs);
        });
    };
    this.timer = setTimeout(tick, this.deps.intervalMs);
  }

  /** One sweep; returns how many runs got their work published again. */
  async sweep(): Promise<number> {
    let total = 0;
    for (;;) {
      const runs = await this.deps.store.reclaimStale(500, this.deps.requeueAfterMs);
      if (runs.length === 0) return total;
      await publishQueuedRuns(this.deps.bus, this.deps.store, runs, this.deps.backstopMs);
      total += runs.length;
      this.deps.log.info({ runs: runs.length }, "re-published work of stale runs");
      if (runs.length < 500) return total;
    }
  }

  /** Publishes the events left in the outbox past OUTBOX_GRACE_MS; returns how many. */
  async sweepOutbox(): Promise<number> {
    const events = await this.deps.store.outboxEvents(OUTBOX_GRACE_MS, 500);
    if (events.length === 0) return 0;
    await publishOutboxEvents(this.deps.store, this.deps.bus, events);
    this.deps.log.info({ events: events.length }, "published engine events left in the outbox");
    return events.length;
  }

  async stop(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.running;
  }
}

/** How long an event stays in the outbox for the process that made it to publish it, before the reconciler does. */
const OUTBOX_GRACE_MS = 5_000;
