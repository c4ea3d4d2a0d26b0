import {
  announceCancelled,
  conditionEvent,
  ExpressionCache,
  flowKeyValue,
  NotifiedRounds,
  publishQueuedRuns,
  TIMER_POLL_MS,
  type AdmissionKeys,
  type Bus,
  type Expression,
  type ConcurrencyLimit,
  type JournalStore,
  type Logger,
  type RunKeys,
  type Sql,
  type UnkeyedRun,
} from "@stepwise/core";

/** Options of the slot keeper. */
export interface SlotKeeperOptions {
  sql: Sql;
  store: JournalStore;
  bus: Bus;
  log: Logger;
  /** Publish deadline of a run granted a slot, until its work is confirmed published. */
  requeueAfterMs: number;
  backstopMs?: number;
}

const BATCH = 500;
/** Shortest time between the starts of two rounds: slot changes of many runs share one. */
const ROUND_SPACING_MS = 10;
/** A key value of an expression over the run's event: "" when there is none or it fails to evaluate. */
function valueOf(run: UnkeyedRun, source: string, compile: (source: string) => Expression, log?: Logger): string {
  return flowKeyValue(source, run.event, compile, log);
}

/** The keys admission decides a run on: its idempotency, rate limit and singleton keys. */
export function admissionKeys(run: UnkeyedRun, compile: (source: string) => Expression, log?: Logger): AdmissionKeys {
  const a = run.flow.admission ?? {};
  const fn = `${run.appId}/${run.functionId}`;
  return {
    runId: run.runId,
    idempotencyKey: a.idempotency ? `idempotency:${fn}:${valueOf(run, a.idempotency, compile, log)}` : undefined,
    rateKey: a.rateLimit
      ? { key: `rate:${fn}:${valueOf(run, a.rateLimit.key, compile, log)}`, limit: a.rateLimit.limit, periodMs: a.rateLimit.periodMs }
      : undefined,
    singletonKey: a.singleton ? { key: `singleton:${fn}:${valueOf(run, a.singleton.key, compile, log)}`, mode: a.singleton.mode } : undefined,
  };
}

/** Most seconds a priority moves a run in the queue, either way. */
const MAX_PRIORITY_S = 600;

/**
 * What flow control makes of a run: one concurrency key per limit (the
 * limit's scope and the value of its key over the run's event), its
 * throttle key, and its place in the queue (its creation time, earlier by
 * as many seconds as its priority evaluates to, -600 to 600; 0 when it
 * fails to evaluate). A key that fails to evaluate is the empty value.
 */
export function runKeys(run: UnkeyedRun, compile: (source: string) => Expression, log?: Logger): RunKeys {
  const { concurrency, throttle, priority } = run.flow;
  const keys = concurrency.map((l, i) => {
    const value = valueOf(run, l.key, compile, log);
    return l.scope === "app" ? `app:${run.appId}:${value}` : `fn:${run.appId}/${run.functionId}#${i}:${value}`;
  });
  let advanceS = 0;
  if (priority) {
    try {
      const v = Number(compile(priority).evaluate({ event: conditionEvent(run.event) }));
      if (Number.isFinite(v)) advanceS = Math.max(-MAX_PRIORITY_S, Math.min(MAX_PRIORITY_S, v));
    } catch (err) {
      log?.debug({ err, run: run.runId }, "a priority could not be evaluated; the run keeps its place");
    }
  }
  return {
    runId: run.runId,
    keys,
    throttleKey: throttle ? `throttle:${run.appId}/${run.functionId}:${valueOf(run, throttle.key, compile, log)}` : undefined,
    queuedAtMs: run.createdAtMs - advanceS * 1000,
  };
}

/**
 * The schedulers' side of flow control that decides when a run starts
 * (concurrency limits, throttles, priorities): computes the keys of new
 * runs of such functions, lets waiting runs start as their keys allow, and
 * publishes their work. It runs on each notification of a slot
 * change (a run created, ended, suspended, woken), when a throttle next
 * lets a run start, and at least every TIMER_POLL_MS in case a
 * notification was lost. Schedulers share the keys without
 * overlap (grant_run_slots locks them with SKIP LOCKED).
 */
export class SlotKeeper {
  private readonly rounds: NotifiedRounds;
  private readonly expressions = new ExpressionCache();
  /** Whether singletons in mode cancel may owe cancels: set by an admission that replaced runs, and at start. */
  private replacementsOwed = true;
  private lastReplacementSweep = 0;

  constructor(private readonly options: SlotKeeperOptions) {
    this.rounds = new NotifiedRounds({
      sql: options.sql,
      channel: () => options.store.slotChannel(),
      round: () => this.round(),
      retryMs: TIMER_POLL_MS,
      spacingMs: ROUND_SPACING_MS,
      log: options.log,
      what: "granting concurrency slots",
    });
  }

  start(): Promise<void> {
    return this.rounds.start();
  }

  stop(): Promise<void> {
    return this.rounds.stop();
  }

  /** Keys new runs and lets waiting ones start; returns how long to sleep. */
  private async round(): Promise<number> {
    const { store, bus, requeueAfterMs, backstopMs, log } = this.options;
    await this.cancelReplaced();
    for (;;) {
      const unkeyed = await store.unkeyedRuns(BATCH);
      if (unkeyed.length === 0) break;
      const runs = await this.admit(unkeyed);
      const limits = new Map<string, number>();
      const throttles = new Map<string, { emissionMs: number; toleranceMs: number }>();
      const keyed = runs.map((run) => {
        const keys = runKeys(run, (source) => this.compile(source), log);
        keys.keys.forEach((k, i) => limits.set(k, (run.flow.concurrency[i] as ConcurrencyLimit).limit));
        const t = run.flow.throttle;
        if (keys.throttleKey && t) {
          // A start every period/limit, up to limit + burst at once.
          const emissionMs = t.periodMs / t.limit;
          throttles.set(keys.throttleKey, { emissionMs, toleranceMs: (t.limit + t.burst - 1) * emissionMs });
        }
        return keys;
      });
      // Runs that admission let start and that wait for nothing else go on now.
      await publishQueuedRuns(bus, store, await store.keyRuns(keyed, limits, throttles, requeueAfterMs), backstopMs);
      if (unkeyed.length < BATCH) break;
    }
    await this.cancelReplaced();
    let retryInMs: number | null = null;
    for (;;) {
      const grants = await store.grantSlots(BATCH, requeueAfterMs);
      retryInMs = grants.retryInMs;
      // A failed publish leaves them QUEUED with a short deadline: the reconciler publishes them.
      await publishQueuedRuns(bus, store, grants.granted, backstopMs);
      if (grants.granted.length < BATCH) break;
    }
    // A throttled run waits for its time; otherwise a change of slot wakes the keeper.
    return retryInMs === null ? TIMER_POLL_MS : Math.min(TIMER_POLL_MS, Math.max(1, Math.ceil(retryInMs)));
  }

  /**
   * Decides whether runs with an idempotency key, a rate limit or a
   * singleton start at all: the skipped ones end (waiters are told), a
   * singleton in mode cancel cancels the runs it replaces. Returns the runs
   * that go on to be keyed.
   */
  private async admit(runs: UnkeyedRun[]): Promise<UnkeyedRun[]> {
    const deciding = runs.filter((r) => r.flow.admission && !r.admitted);
    if (deciding.length === 0) return runs;
    const { store, bus, log } = this.options;
    const compile = (source: string) => this.compile(source);
    const outcomes = await store.admitRuns(deciding.map((r) => admissionKeys(r, compile, log)));
    const skipped = new Set<string>();
    const ended = [];
    for (const o of outcomes) {
      if (o.kind === "skipped") {
        skipped.add(o.runId);
        ended.push({ runId: o.runId, eventId: o.eventId });
      } else if (o.toCancel.length > 0) {
        this.replacementsOwed = true;
      }
    }
    if (ended.length > 0) bus.announceRunsEnded(ended);
    return runs.filter((r) => !skipped.has(r.runId));
  }

  /**
   * Cancels the runs singletons in mode cancel replaced, when an admission
   * of this keeper replaced some, and once in a while in case another
   * scheduler died before it paid what its admissions owed.
   */
  private async cancelReplaced(): Promise<void> {
    if (!this.replacementsOwed && Date.now() - this.lastReplacementSweep < TIMER_POLL_MS) return;
    this.replacementsOwed = false;
    this.lastReplacementSweep = Date.now();
    for (;;) {
      const cancelled = await this.options.store.cancelReplacedSingletons(BATCH);
      await announceCancelled(this.options, cancelled);
      if (cancelled.length < BATCH) break;
    }
  }

  private compile(source: string): Expression {
    return this.expressions.get(source);
  }
}
