import { listFunctions, type RegisteredFunction, registerFunctions } from "./function-registry.js";
import {
  createRuns,
  type DeriveOutcome,
  deriveRun,
  deriveRuns,
  recordEvent,
  recordEventMatching,
  recordEventsMatching,
} from "./run-creation.js";
import { deleteOutboxEvents, outboxEvents } from "./event-outbox.js";
import {
  type CancelOutcome,
  cancelInvokedRuns,
  cancelRun,
  cancelRuns,
  completeRun,
  completeRuns,
  failRunOf,
  type OutboxEvent,
  type RunCompletion,
  type RunFailure,
} from "./run-ends.js";
import { type InvocationOutcome, type InvokeAwait, startInvocations } from "./invocations.js";
import { closeDueWindows, gatherEvents, type GatherItem, type WindowRuns } from "./event-windows.js";
import { type ExpiredRun, expireDeadlines } from "./run-deadlines.js";
import {
  admitRuns,
  type AdmissionKeys,
  type AdmissionOutcome,
  cancelReplacedSingletons,
  grantSlots,
  keyRuns,
  type RunKeys,
  type SlotGrants,
  slotChannel,
  type UnkeyedRun,
  unkeyedRuns,
} from "./concurrency-slots.js";
import { claimRun, claimRuns, expireQueued, expireUnfinished, markPublished, reclaimStale, renewLeases, requeueRun } from "./run-leases.js";
import {
  type SelectedRun,
  selectRuns,
  type RunSelection,
  endedEvents,
  hasEvent,
  listRuns,
  listRunsOfEvents,
  readRun,
} from "./run-views.js";
import type { Sql } from "./sql.js";
import { type CancelCandidate, WaitStore } from "./wait-store.js";
import { queueDepths } from "./queue-depths.js";
import { deleteEndedRuns, deleteUnreferencedEvents } from "./retention.js";
import type { QueuedRuns, RunMetrics, ServiceMetrics } from "../runtime/metrics.js";
import { type EventFilter, type EventView, listEvents } from "./event-views.js";
import { countRuns, type RunCount } from "./run-counts.js";
import { listWorkers, recordWorkers, removeWorker, type WorkerExecutor, type WorkerRecord, type WorkerView } from "./worker-records.js";
import { journalAttempt, journalStep, journalSteps } from "./step-journal.js";
import {
  type AttemptRecord,
  type ClaimedRun,
  DEFAULT_QUEUED_BACKSTOP_MS,
  DEFAULT_TIMER_CHANNEL,
  type EventInput,
  type FunctionRegistration,
  type JournalOutcome,
  type PublishedRun,
  type PublishedRunRef,
  type RecordedEvent,
  type RunFilter,
  type RunView,
  type StepRecord,
  type StoredError,
} from "./types.js";

/**
 * The journal as the services hold it: one object over one database, whose
 * methods are the statements of the modules beside this file (each named
 * for its part of a run's life). Timers and waits have stores of their own
 * (TimerStore, WaitStore). Each method is one round trip to Postgres unless
 * the function it calls says otherwise, and runs on Postgres and PGlite
 * alike. With `metrics`, it counts the runs its statements start (a first
 * claim) and end, by status, once the statement returned.
 */
export class JournalStore {
  /** The LISTEN/NOTIFY channel that wakes schedulers when timers or schedules change. */
  readonly timerChannel: string;
  private readonly runMetrics: RunMetrics | undefined;

  constructor(
    private readonly sql: Sql,
    options: { timerChannel?: string; metrics?: ServiceMetrics | undefined } = {},
  ) {
    this.timerChannel = options.timerChannel ?? DEFAULT_TIMER_CHANNEL;
    this.runMetrics = options.metrics?.runs;
  }

  // function-registry.ts

  /** Upserts an app's functions and replaces their triggers and cron schedules, in one transaction. */
  registerFunctions(appId: string, functions: FunctionRegistration[]): Promise<void> {
    return registerFunctions(this.sql, this.timerChannel, appId, functions);
  }

  /** The registered functions, of one app or all. */
  listFunctions(appId?: string): Promise<RegisteredFunction[]> {
    return listFunctions(this.sql, appId);
  }

  // run-creation.ts

  /** Stores an event and creates the runs of its unconditional triggers; returns them. */
  recordEvent(ev: EventInput, backstopMs = DEFAULT_QUEUED_BACKSTOP_MS): Promise<PublishedRunRef[]> {
    return recordEvent(this.sql, ev, backstopMs);
  }

  /** Stores an event, creates the runs of its unconditional triggers, and returns them with the conditional triggers. */
  recordEventMatching(ev: EventInput, backstopMs = DEFAULT_QUEUED_BACKSTOP_MS): Promise<RecordedEvent> {
    return recordEventMatching(this.sql, ev, backstopMs);
  }

  /** recordEventMatching for many events in one statement. */
  recordEventsMatching(events: readonly EventInput[], backstopMs = DEFAULT_QUEUED_BACKSTOP_MS): Promise<RecordedEvent[]> {
    return recordEventsMatching(this.sql, events, backstopMs);
  }

  /** Creates the runs of an event for the functions whose trigger conditions held. */
  createRuns(
    eventId: string,
    functions: ReadonlyArray<{ appId: string; functionId: string }>,
    backstopMs = DEFAULT_QUEUED_BACKSTOP_MS,
    traceParent?: string,
  ): Promise<PublishedRunRef[]> {
    return createRuns(this.sql, eventId, functions, backstopMs, traceParent);
  }

  /** A rerun (no `fromStep`) or a replay from a step of a run, QUEUED. */
  deriveRun(originRunId: string, fromStep: string | undefined, deadlineMs: number): Promise<DeriveOutcome> {
    return deriveRun(this.sql, originRunId, fromStep, deadlineMs);
  }

  /** deriveRun for many origin runs in one statement. */
  deriveRuns(originRunIds: readonly string[], fromStep: string | undefined, deadlineMs: number): Promise<DeriveOutcome[]> {
    return deriveRuns(this.sql, originRunIds, fromStep, deadlineMs);
  }

  // invocations.ts

  /** Starts the runs a suspension invokes (step.invoke), if this execution holds the run. */
  startInvocations(runId: string, lease: number, invokes: readonly InvokeAwait[], deadlineMs: number): Promise<InvocationOutcome> {
    return startInvocations(this.sql, runId, lease, invokes, deadlineMs);
  }

  /** Cancels the runs a CANCELLED run invoked that have not ended (run-ends.ts). */
  async cancelInvokedRuns(runId: string): Promise<Array<{ runId: string; outcome: CancelOutcome }>> {
    return this.countCancelled(await cancelInvokedRuns(this.sql, runId), (c) => c.outcome);
  }

  // run-leases.ts

  /** Claims a run for an executor; null when it is not claimable. */
  async claimRun(runId: string, executorId: string, leaseMs: number): Promise<ClaimedRun | null> {
    const claimed = await claimRun(this.sql, runId, executorId, leaseMs);
    if (claimed?.lease === 1) this.runMetrics?.runStarted(claimed.appId, claimed.functionId);
    return claimed;
  }

  /** Claims many runs in one statement; null for each run not claimable. */
  async claimRuns(runIds: readonly string[], executorId: string, leaseMs: number): Promise<Array<ClaimedRun | null>> {
    const claimed = await claimRuns(this.sql, runIds, executorId, leaseMs);
    const m = this.runMetrics;
    if (m) for (const c of claimed) if (c?.lease === 1) m.runStarted(c.appId, c.functionId);
    return claimed;
  }

  /** Hands a held run back to the queue; false when the lease was lost. */
  requeueRun(runId: string, lease: number, requeueAfterMs: number): Promise<boolean> {
    return requeueRun(this.sql, runId, lease, requeueAfterMs);
  }

  /** Extends the leases of the runs an executor still holds. */
  renewLeases(executorId: string, runIds: readonly string[], leaseMs: number): Promise<number> {
    return renewLeases(this.sql, executorId, runIds, leaseMs);
  }

  /** Confirms that the work of QUEUED runs is on the bus. */
  markPublished(runs: readonly PublishedRun[], backstopMs = DEFAULT_QUEUED_BACKSTOP_MS): Promise<void> {
    return markPublished(this.sql, runs, backstopMs);
  }

  /** The reconciler's sweep: takes back lapsed and unconfirmed runs, to publish their work again. */
  reclaimStale(limit: number, requeueAfterMs: number): Promise<PublishedRunRef[]> {
    return reclaimStale(this.sql, limit, requeueAfterMs);
  }

  /** Makes every unfinished run due for the reconciler at once (the embedded engine's restart). */
  expireUnfinished(): Promise<void> {
    return expireUnfinished(this.sql);
  }

  /** Makes every QUEUED run due for the reconciler (a work stream made anew); returns how many. */
  expireQueued(): Promise<number> {
    return expireQueued(this.sql);
  }

  // retention.ts

  /** Deletes up to `limit` runs that ended more than `olderThanMs` ago, with what is kept for them. */
  deleteEndedRuns(olderThanMs: number, limit: number): Promise<number> {
    return deleteEndedRuns(this.sql, olderThanMs, limit);
  }

  /** Deletes up to `limit` events older than `olderThanMs` that no run or window refers to. */
  deleteUnreferencedEvents(olderThanMs: number, limit: number): Promise<number> {
    return deleteUnreferencedEvents(this.sql, olderThanMs, limit);
  }

  // step-journal.ts

  /** Journals a step result, first write wins, if this execution holds the run. */
  journalStep(s: StepRecord): Promise<JournalOutcome> {
    return journalStep(this.sql, s);
  }

  /** Journals the step results of many executions in one statement. */
  journalSteps(records: readonly StepRecord[]): Promise<JournalOutcome[]> {
    return journalSteps(this.sql, records);
  }

  /** Journals a failed attempt that will be retried; false when the lease was lost. */
  journalAttempt(a: AttemptRecord): Promise<boolean> {
    return journalAttempt(this.sql, a);
  }

  // run-ends.ts

  /** Ends a held run as COMPLETED, waking the run that invoked it; null when the lease was lost. */
  async completeRun(runId: string, lease: number, outputJson: string, requeueAfterMs = 60_000): Promise<RunCompletion | null> {
    const done = await completeRun(this.sql, runId, lease, outputJson, requeueAfterMs);
    if (done) this.runMetrics?.runEnded(done.appId, done.functionId, "COMPLETED");
    return done;
  }

  /** Ends many held runs as COMPLETED in one statement. */
  async completeRuns(
    runs: ReadonlyArray<{ runId: string; lease: number; outputJson: string }>,
    requeueAfterMs = 60_000,
  ): Promise<Array<RunCompletion | null>> {
    const done = await completeRuns(this.sql, runs, requeueAfterMs);
    const m = this.runMetrics;
    if (m) for (const d of done) if (d) m.runEnded(d.appId, d.functionId, "COMPLETED");
    return done;
  }

  /** Ends a held run as FAILED, creating its onFailure run and waking the run that invoked it in the same statement. */
  async failRun(runId: string, lease: number, error: StoredError, requeueAfterMs = 60_000): Promise<RunFailure> {
    const { failure, failed } = await failRunOf(this.sql, runId, lease, error, requeueAfterMs);
    if (failed) this.runMetrics?.runEnded(failed.appId, failed.functionId, "FAILED");
    return failure;
  }

  /** Ends a run CANCELLED unless it ended, and puts its "stepwise/run.cancelled" event in the outbox. */
  async cancelRun(runId: string, reason: string): Promise<CancelOutcome> {
    const outcome = await cancelRun(this.sql, runId, reason);
    this.countCancelled([outcome], (o) => o);
    return outcome;
  }

  /** cancelRun for many runs in one statement, with one reason for all or one each; one outcome per id, in order. */
  async cancelRuns(runIds: readonly string[], reason: string | readonly string[]): Promise<CancelOutcome[]> {
    return this.countCancelled(await cancelRuns(this.sql, runIds, reason), (o) => o);
  }

  /** Counts the runs cancel outcomes cancelled, with those cancelled because they invoked them; returns the outcomes. */
  private countCancelled<T>(items: T[], outcomeOf: (item: T) => CancelOutcome): T[] {
    const m = this.runMetrics;
    if (!m) return items;
    for (const item of items) {
      const o = outcomeOf(item);
      if (o.kind !== "cancelled") continue;
      m.runEnded(o.appId, o.functionId, "CANCELLED");
      for (const k of o.invoked ?? []) m.runEnded(k.outcome.appId, k.outcome.functionId, "CANCELLED");
    }
    return items;
  }

  // concurrency-slots.ts

  /** The channel slot changes are notified on. */
  slotChannel(): Promise<string> {
    return slotChannel(this.sql);
  }

  /** Up to `limit` runs of limited functions waiting for their keys, oldest first. */
  unkeyedRuns(limit: number): Promise<UnkeyedRun[]> {
    return unkeyedRuns(this.sql, limit);
  }

  /** Stores what the slot keeper computed for unkeyed runs and the limits and rates of their keys. */
  keyRuns(
    runs: readonly RunKeys[],
    limits: ReadonlyMap<string, number>,
    throttles: ReadonlyMap<string, { emissionMs: number; toleranceMs: number }> = new Map(),
    deadlineMs?: number,
  ): Promise<PublishedRunRef[]> {
    return keyRuns(this.sql, runs, limits, throttles, deadlineMs);
  }

  /** Decides whether unkeyed runs start at all (idempotency, rate limit, singleton). */
  async admitRuns(runs: readonly AdmissionKeys[]): Promise<AdmissionOutcome[]> {
    const outcomes = await admitRuns(this.sql, runs);
    const m = this.runMetrics;
    if (m) for (const o of outcomes) if (o.kind === "skipped") m.runEnded(o.appId, o.functionId, "SKIPPED");
    return outcomes;
  }

  /** Cancels up to `limit` runs that singletons in mode cancel replaced; returns them. */
  async cancelReplacedSingletons(limit: number): Promise<Array<{ runId: string; outcome: CancelOutcome }>> {
    return this.countCancelled(await cancelReplacedSingletons(this.sql, limit), (c) => c.outcome);
  }

  /** Lets up to `max` waiting runs start; returns them, their work to be published, and when a throttle next allows one. */
  grantSlots(max: number, deadlineMs: number): Promise<SlotGrants> {
    return grantSlots(this.sql, max, deadlineMs);
  }

  // event-windows.ts

  /** Gathers events into the windows of their keys (debounce, batchEvents); returns how many were gathered. */
  gatherEvents(items: readonly GatherItem[]): Promise<number> {
    return gatherEvents(this.sql, this.timerChannel, items);
  }

  /** Makes the runs of up to `limit` windows that are due; returns them. */
  closeDueWindows(limit: number, deadlineMs: number): Promise<WindowRuns> {
    return closeDueWindows(this.sql, limit, deadlineMs);
  }

  // run-deadlines.ts

  /** Cancels the runs of up to `limit` deadlines (timeouts) that passed; returns them. */
  async expireDeadlines(limit: number): Promise<ExpiredRun[]> {
    return this.countCancelled(await expireDeadlines(this.sql, limit), (e) => e.outcome);
  }

  // wait-store.ts

  /**
   * For runs created outside the event stream: the events stored already
   * that may fire their cancelOn rules (WaitStore.cancelLookback).
   */
  cancelLookback(runIds: readonly string[]): Promise<CancelCandidate[]> {
    return new WaitStore(this.sql).cancelLookback(runIds);
  }

  // event-outbox.ts

  /** Events the engine made that are still in the outbox after `olderThanMs`. */
  outboxEvents(olderThanMs: number, limit: number): Promise<OutboxEvent[]> {
    return outboxEvents(this.sql, olderThanMs, limit);
  }

  /** Removes events JetStream stored from the outbox. */
  deleteOutboxEvents(ids: readonly string[]): Promise<void> {
    return deleteOutboxEvents(this.sql, ids);
  }

  // run-views.ts

  /** Reads a run with its event, journal and failed attempts; null when unknown. */
  getRun(runId: string): Promise<RunView | null> {
    return readRun(this.sql, runId);
  }

  /** Of the given event ids, those whose runs all ended. */
  endedEvents(eventIds: readonly string[]): Promise<string[]> {
    return endedEvents(this.sql, eventIds);
  }

  /** Lists runs newest first, without steps. */
  listRuns(filter: RunFilter): Promise<RunView[]> {
    return listRuns(this.sql, filter);
  }

  /** The runs of several events, oldest first, without steps. */
  runsOfEvents(eventIds: readonly string[]): Promise<RunView[]> {
    return listRunsOfEvents(this.sql, eventIds);
  }

  /** A page of the runs a bulk cancel selects, in id order after `afterId`. */
  selectRuns(filter: RunSelection, afterId: string | undefined, limit: number): Promise<SelectedRun[]> {
    return selectRuns(this.sql, filter, afterId, limit);
  }

  /** Whether an event with this id is stored. */
  hasEvent(eventId: string): Promise<boolean> {
    return hasEvent(this.sql, eventId);
  }

  // queue-depths.ts

  /** The QUEUED runs of each function and the age of the oldest never started, for the queue metrics. */
  queueDepths(): Promise<QueuedRuns[]> {
    return queueDepths(this.sql);
  }

  /** The runs created since a time, counted by function and status, of one app or all. */
  countRuns(since: Date, appId?: string): Promise<RunCount[]> {
    return countRuns(this.sql, since, appId);
  }

  // event-views.ts

  /** Lists stored events newest first, each with its runs (two round trips). */
  listEvents(filter: EventFilter): Promise<EventView[]> {
    return listEvents(this.sql, filter);
  }

  // worker-records.ts

  /** Upserts the rows of an executor's connected workers and deletes other executors' expired rows. */
  recordWorkers(executor: WorkerExecutor, workers: readonly WorkerRecord[]): Promise<void> {
    return recordWorkers(this.sql, executor, workers);
  }

  /** Deletes the row of a worker stream that ended. */
  removeWorker(sessionId: string): Promise<void> {
    return removeWorker(this.sql, sessionId);
  }

  /** The connected workers whose executors keep their rows current, of one app or all. */
  listWorkers(appId?: string): Promise<WorkerView[]> {
    return listWorkers(this.sql, appId);
  }
}
