// What the Stepwise services share, by folder:
//   journal/     Postgres: the journal store and its modules (functions, run
//                creation, leases, steps, run ends, views), timers, waits,
//                migrations, the SQL clients
//   bus/         the Bus interface, over JetStream and in process, and run work
//   conditions/  CEL conditions, cron schedules, wait matching
//   runtime/     configuration, logging, the Connect server, group commit,
//                metrics
// Exports are named; nothing here re-exports a module whole.
export {
  backoffMs,
  type Bus,
  type CompletedRun,
  type ConsumeEventsOptions,
  type Delivery,
  type RunCancel,
  type RunEnd,
  type Subscription,
} from "./bus/bus.js";
export { JetStreamBus, type JetStreamBusOptions } from "./bus/jetstream-bus.js";
export { MemoryBus } from "./bus/memory-bus.js";
export { publishOutboxEvents } from "./bus/outbox-publishing.js";
export { announceCancelled, cancelMatchedRuns, cancelOnEarlierEvents } from "./bus/run-cancelling.js";
export { MAX_RUNS_PER_WORK, publishQueuedRuns, publishRunWork, WorkPublisher, workMessages, workRunIds } from "./bus/run-work.js";
export { WorkRetry, workRetryOf } from "./bus/work-retry.js";
export {
  type Condition,
  type ConditionEvent,
  type ConditionVariable,
  compileCondition,
  compileExpression,
  type Expression,
  InvalidConditionError,
  MAX_CONDITION_LENGTH,
  valueAt,
} from "./conditions/cel-condition.js";
export { CronSchedule, InvalidCronError } from "./conditions/cron-schedule.js";
export { conditionEvent, waitMatches, waitOutputJson } from "./conditions/wait-matching.js";
export { ExpressionCache, flowKeyValue } from "./conditions/flow-key.js";
export { JournalStore } from "./journal/journal-store.js";
export type { RegisteredFunction } from "./journal/function-registry.js";
export type { DeriveOutcome } from "./journal/run-creation.js";
export type { CancelOutcome, OutboxEvent, RunCompletion, RunFailure } from "./journal/run-ends.js";
export { INVOKED_EVENT_NAME, type InvocationOutcome, type InvokeAwait, invokeEventId } from "./journal/invocations.js";
export type { ExpiredRun } from "./journal/run-deadlines.js";
export type { GatherItem, WindowRuns } from "./journal/event-windows.js";
export type {
  Admission,
  AdmissionKeys,
  AdmissionOutcome,
  ConcurrencyLimit,
  FlowControl,
  RunKeys,
  SlotGrants,
  ThrottleRule,
  UnkeyedRun,
} from "./journal/concurrency-slots.js";
export type { SelectedRun, RunSelection } from "./journal/run-views.js";
export type { EventFilter, EventView } from "./journal/event-views.js";
export type { RunCount } from "./journal/run-counts.js";
export type { WorkerExecutor, WorkerRecord, WorkerView } from "./journal/worker-records.js";
export { type Migration, migrate, migrations } from "./journal/migrations.js";
export { createPgliteSql } from "./journal/pglite-sql.js";
export { createPgSql, type PgSqlOptions, quoteIdent, type Row, type Sql, type SqlTx, timedSql } from "./journal/sql.js";
export { type AwaitRecord, type DueCron, type FiredRun, type SuspendOutcome, TIMER_POLL_MS, TimerStore } from "./journal/timer-store.js";
export {
  type AttemptRecord,
  type AttemptView,
  type AwaitView,
  type ClaimedRun,
  type ConditionalTrigger,
  type EventWindowRule,
  type GatheringTrigger,
  DEFAULT_QUEUED_BACKSTOP_MS,
  DEFAULT_TIMER_CHANNEL,
  type EventInput,
  type CancelOnRule,
  type FunctionRegistration,
  isUuid,
  type JournalEntry,
  type JournalOutcome,
  type PublishedRun,
  type PublishedRunRef,
  type RecordedEvent,
  type RunFilter,
  type RunRef,
  type RunRules,
  type RunStatus,
  type RunView,
  type StepRecord,
  type StepView,
  type StoredError,
} from "./journal/types.js";
export {
  type CancelCandidate,
  CANCEL_LOOKBACK_LIMIT,
  type EventLookup,
  type EventMatches,
  LOOKBACK_PAGE,
  type LookbackCandidate,
  type WaitCandidate,
  type WaitEvent,
  type WaitMatch,
  WaitStore,
} from "./journal/wait-store.js";
export { type Config, loadConfig } from "./runtime/config.js";
export { GroupCommit } from "./runtime/group-commit.js";
export { NotifiedRounds, type NotifiedRoundsOptions } from "./runtime/notified-rounds.js";
export { createLogger, type Logger } from "./runtime/log.js";
export {
  BusMetrics,
  ExecutorMetrics,
  type GroupCommitKind,
  IngestMetrics,
  JournalMetrics,
  type PublishStream,
  type QueuedRuns,
  type RunEndStatus,
  RunMetrics,
  SchedulerMetrics,
  ServiceMetrics,
  type StepOutcome,
  type WorkerSlots,
} from "./runtime/metrics.js";
export { type PlainHandler, type RunningServer, serveConnect, type TlsFiles } from "./runtime/server.js";
export { boundedMessage, MAX_ERROR_MESSAGE_LENGTH, quote } from "./runtime/client-errors.js";
export { contextOfTraceParent, endSpan, startSpanAfter, startTracing, type TracedSpan, traceParentOf, type TraceSpan, withSpan } from "./runtime/tracing.js";
export {
  type ApiKey,
  DEFAULT_ENVIRONMENT,
  ENVIRONMENT_PATTERN,
  environmentPlace,
  KEY_SCOPES,
  type KeyScope,
  KeyStore,
  migrateControl,
  type NewKey,
  newKeyProblem,
} from "./auth/api-keys.js";
export { authenticate, bearerKey, CALLER, type Caller, callerOf, scopesFor } from "./auth/authenticate.js";
export { environmentRoutes, type Implementations, implementationsOf, type Routes } from "./auth/environment-routes.js";
export { KEY_REFRESH_MS, KeyCache } from "./auth/key-cache.js";
