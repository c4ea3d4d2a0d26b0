import type { Bus, JournalStore, Logger, Subscription } from "@stepwise/core";
import { handleEvent, Reconciler } from "./run-creation.js";

export { handleEvent, publishRunWork, Reconciler } from "./run-creation.js";

/** Options of the scheduler. */
export interface SchedulerOptions {
  store: JournalStore;
  bus: Bus;
  log: Logger;
  /** Events handled at once. */
  concurrency: number;
  requeueAfterMs: number;
  reconcileIntervalMs: number;
  /** When a run waiting in the queue has its work published once more. */
  queuedBackstopMs?: number;
}

/**
 * The scheduler: the durable consumer of events that turns them into runs,
 * plus the reconciler that re-publishes work of stale runs.
 */
export class Scheduler {
  private subscription: Subscription | undefined;
  private readonly reconciler: Reconciler;

  constructor(private readonly options: SchedulerOptions) {
    this.reconciler = new Reconciler({
      store: options.store,
      bus: options.bus,
      log: options.log,
      requeueAfterMs: options.requeueAfterMs,
      intervalMs: options.reconcileIntervalMs,
      ...(options.queuedBackstopMs !== undefined ? { backstopMs: options.queuedBackstopMs } : {}),
    });
  }

  async start(): Promise<void> {
    const { store, bus, log, queuedBackstopMs } = this.options;
    this.subscription = await bus.consumeEvents(
      async (record, delivery) => {
        try {
          await handleEvent(record, { store, bus, ...(queuedBackstopMs !== undefined ? { backstopMs: queuedBackstopMs } : {}) });
        } catch (err) {
          log.warn({ err, eventId: record.id, delivery: delivery.deliveryCount }, "event handling failed, will retry");
          throw err;
        }
      },
      { concurrency: this.options.concurrency },
    );
    this.reconciler.start();
  }

  async stop(): Promise<void> {
    await this.reconciler.stop();
    await this.subscription?.stop();
  }
}
