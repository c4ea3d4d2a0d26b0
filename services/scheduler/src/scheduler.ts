import type { Bus, JournalStore, Logger, ServiceMetrics, Sql, Subscription, TimerStore, WaitStore } from "@stepwise/core";
import { EventBatches } from "./event-batches.js";
import { handleEvent } from "./event-handling.js";
import { Reconciler } from "./reconciler.js";
import { RetentionSweeper } from "./retention.js";
import { SlotKeeper } from "./slot-keeper.js";
import { TimerFiring } from "./timer-firing.js";

/** Options of the scheduler. */
export interface SchedulerOptions {
  sql: Sql;
  store: JournalStore;
  timers: TimerStore;
  waits: WaitStore;
  bus: Bus;
  log: Logger;
  /** Events handled at once. */
  concurrency: number;
  requeueAfterMs: number;
  reconcileIntervalMs: number;
  /** When a run waiting in the queue has its work published once more. */
  queuedBackstopMs?: number;
  /** Where the scheduler's metrics go: timer lateness, batch sizes, and the queue, read at each scrape. */
  metrics?: ServiceMetrics | undefined;
  /** STEPWISE_RETENTION: ended runs and unreferenced events older than this are deleted; kept for ever when unset. */
  retentionMs?: number | undefined;
}

/**
 * The scheduler: the durable consumer of events that turns them into runs
 * and resolves the waits they match, the timer firing (sleeps, retries,
 * wait timeouts, cron ticks, run deadlines), the slot keeper (concurrency
 * limits), and the reconciler that re-publishes work of stale runs.
 */
export class Scheduler {
  private subscription: Subscription | undefined;
  private readonly reconciler: Reconciler;
  private readonly firing: TimerFiring;
  private readonly slots: SlotKeeper;
  private readonly retention: RetentionSweeper | undefined;
  private unwatchQueue: (() => void) | undefined;

  constructor(private readonly options: SchedulerOptions) {
    this.slots = new SlotKeeper({
      sql: options.sql,
      store: options.store,
      bus: options.bus,
      log: options.log,
      requeueAfterMs: options.requeueAfterMs,
      ...(options.queuedBackstopMs !== undefined ? { backstopMs: options.queuedBackstopMs } : {}),
    });
    this.reconciler = new Reconciler({
      store: options.store,
      bus: options.bus,
      log: options.log,
      requeueAfterMs: options.requeueAfterMs,
      intervalMs: options.reconcileIntervalMs,
      ...(options.queuedBackstopMs !== undefined ? { backstopMs: options.queuedBackstopMs } : {}),
    });
    this.firing = new TimerFiring({
      sql: options.sql,
      store: options.store,
      timers: options.timers,
      bus: options.bus,
      log: options.log,
      requeueAfterMs: options.requeueAfterMs,
      ...(options.queuedBackstopMs !== undefined ? { backstopMs: options.queuedBackstopMs } : {}),
      metrics: options.metrics,
    });
    this.retention = options.retentionMs ? new RetentionSweeper({ store: options.store, log: options.log, retentionMs: options.retentionMs }) : undefined;
  }

  async start(): Promise<void> {
    const { store, waits, bus, log, queuedBackstopMs, requeueAfterMs, metrics } = this.options;
    const batches = new EventBatches(store, waits, bus, queuedBackstopMs, metrics);
    this.unwatchQueue = metrics?.scheduler.watchQueue(() => store.queueDepths());
    this.subscription = await bus.consumeEvents(
      async (record, delivery) => {
        try {
          await handleEvent(record, {
            store,
            waits,
            bus,
            log,
            requeueAfterMs,
            batches,
            ...(queuedBackstopMs !== undefined ? { backstopMs: queuedBackstopMs } : {}),
          });
        } catch (err) {
          log.warn({ err, eventId: record.id, delivery: delivery.deliveryCount }, "event handling failed, will retry");
          throw err;
        }
      },
      { concurrency: this.options.concurrency },
    );
    this.reconciler.start();
    await this.firing.start();
    await this.slots.start();
    this.retention?.start();
  }

  async stop(): Promise<void> {
    this.unwatchQueue?.();
    await this.retention?.stop();
    await this.slots.stop();
    await this.firing.stop();
    await this.reconciler.stop();
    await this.subscription?.stop();
  }
}
