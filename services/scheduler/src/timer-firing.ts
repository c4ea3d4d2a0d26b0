import {
  announceCancelled,
  cancelOnEarlierEvents,
  CronSchedule,
  NotifiedRounds,
  publishQueuedRuns,
  TIMER_POLL_MS,
  type Bus,
  type DueCron,
  type JournalStore,
  type Logger,
  type PublishedRunRef,
  type ServiceMetrics,
  type Sql,
  type TimerStore,
} from "@stepwise/core";

/** Options of the timer firing. */
export interface TimerFiringOptions {
  sql: Sql;
  store: JournalStore;
  timers: TimerStore;
  bus: Bus;
  log: Logger;
  requeueAfterMs: number;
  backstopMs?: number;
  /** Where the lateness of the timers fired goes. */
  metrics?: ServiceMetrics | undefined;
}

const BATCH = 500;
const CRON_BATCH = 100;
const DEADLINE_BATCH = 500;
const WINDOW_BATCH = 200;
/** Pause before looking again when what is due is held by another scheduler. */
const BUSY_RETRY_MS = 20;

/**
 * Fires due timers (sleep ends, retry times, wait timeouts) and cron ticks,
 * makes the runs of the event windows that are due (debounce,
 * batchEvents), and cancels the runs whose timeouts passed.
 * It sleeps until the next one is due, by the database's clock, and wakes
 * early on a NOTIFY from a suspension or a registration that made something
 * due sooner; it looks again at least every TIMER_POLL_MS in case a
 * notification was lost. Schedulers share the work without overlap (the
 * statements lock with SKIP LOCKED).
 */
export class TimerFiring {
  private readonly rounds: NotifiedRounds;
  private readonly schedules = new Map<string, CronSchedule>();

  constructor(private readonly options: TimerFiringOptions) {
    this.rounds = new NotifiedRounds({
      sql: options.sql,
      channel: options.timers.channel,
      round: () => this.round(),
      retryMs: TIMER_POLL_MS,
      log: options.log,
      what: "firing timers",
    });
  }

  start(): Promise<void> {
    return this.rounds.start();
  }

  stop(): Promise<void> {
    return this.rounds.stop();
  }

  /** Fires what is due; returns how long to sleep. */
  private async round(): Promise<number> {
    const { timers, requeueAfterMs } = this.options;
    const m = this.options.metrics?.scheduler;
    let fired = 0;
    for (;;) {
      const runs = await timers.fireDue(BATCH, requeueAfterMs);
      fired += runs.length;
      if (m) for (const r of runs) m.timerFired(r.lateMs / 1000);
      await this.publish(runs);
      if (runs.length < BATCH) break;
    }
    for (;;) {
      const runs = await timers.fireCron(CRON_BATCH, requeueAfterMs, (due, nowMs) => this.nextTick(due, nowMs));
      fired += runs.length;
      await this.publish(runs);
      // A tick's run listens for its cancelOn events from its creation on.
      await cancelOnEarlierEvents(this.options, runs.map((r) => r.runId));
      if (runs.length < CRON_BATCH) break;
    }
    for (;;) {
      const windows = await this.options.store.closeDueWindows(WINDOW_BATCH, requeueAfterMs);
      fired += windows.created.length;
      await this.publish(windows.publish);
      // A window's run listens for its cancelOn events from its event on, received before the run was made.
      await cancelOnEarlierEvents(this.options, windows.created);
      if (windows.created.length < WINDOW_BATCH) break;
    }
    for (;;) {
      const expired = await this.options.store.expireDeadlines(DEADLINE_BATCH);
      fired += expired.length;
      await announceCancelled(this.options, expired);
      if (expired.length < DEADLINE_BATCH) break;
    }
    const next = await timers.nextDueInMs();
    // Due already but nothing fired: another scheduler holds it; look again shortly rather than spin.
    if (next === 0 && fired === 0) return BUSY_RETRY_MS;
    return Math.min(next ?? TIMER_POLL_MS, TIMER_POLL_MS);
  }

  private nextTick(due: DueCron, nowMs: number): Date | null {
    const key = `${due.timezone}\u0000${due.cron}`;
    let schedule = this.schedules.get(key);
    if (!schedule) {
      try {
        schedule = new CronSchedule(due.cron, due.timezone);
      } catch (err) {
        // Validated at registration; a schedule that stopped parsing fires no more.
        this.options.log.error({ err, function: due.functionId }, "a stored cron schedule does not parse");
        return null;
      }
      this.schedules.set(key, schedule);
    }
    try {
      return schedule.nextAfter(new Date(Math.max(nowMs, due.tickMs)));
    } catch (err) {
      // One schedule that cannot compute its next tick stops; the others go on.
      this.options.log.error({ err, function: due.functionId }, "a cron schedule cannot compute its next tick");
      return null;
    }
  }

  private async publish(runs: PublishedRunRef[]): Promise<void> {
    // A failed publish leaves the runs QUEUED with a short deadline: the reconciler publishes them.
    await publishQueuedRuns(this.options.bus, this.options.store, runs, this.options.backstopMs);
  }
}
