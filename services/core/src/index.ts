export { type Bus, type ConsumeEventsOptions, type Delivery, type CompletedRun, type RunEnd, type Subscription, ID_PATTERN } from "./bus.js";
export {
  type Condition,
  type ConditionEvent,
  type ConditionVariable,
  compileCondition,
  InvalidConditionError,
  MAX_CONDITION_LENGTH,
  valueAt,
} from "./cel-condition.js";
export { type Config, loadConfig } from "./config.js";
export { CronSchedule, InvalidCronError } from "./cron-schedule.js";
export { GroupCommit } from "./group-commit.js";
export { errorFromProto, errorToProto } from "./error-detail.js";
export { JetStreamBus, type JetStreamBusOptions, backoffMs } from "./jetstream-bus.js";
export {
  type AttemptRecord,
  type AttemptView,
  type ClaimedRun,
  type ConditionalTrigger,
  DEFAULT_TIMER_CHANNEL,
  type RecordedEvent,
  type EventInput,
  type FunctionRegistration,
  type JournalEntry,
  type JournalOutcome,
  JournalStore,
  type RunFilter,
  type PublishedRun,
  type PublishedRunRef,
  type RunRef,
  DEFAULT_QUEUED_BACKSTOP_MS,
  type RunStatus,
  type RunView,
  type StepRecord,
  type StepView,
  type StoredError,
  isUuid,
} from "./journal-store.js";
export { createLogger, type Logger } from "./log.js";
export { MemoryBus } from "./memory-bus.js";
export { type Migration, migrate, migrations } from "./migrations.js";
export { createPgliteSql } from "./pglite-sql.js";
export { MAX_RUNS_PER_WORK, WorkPublisher, workMessages, workRunIds } from "./run-work.js";
export { type AwaitRecord, type DueCron, type SuspendOutcome, TIMER_POLL_MS, TimerStore } from "./timer-store.js";
export { conditionEvent, waitMatches, waitOutputJson } from "./wait-matching.js";
export {
  LOOKBACK_PAGE,
  type LookbackCandidate,
  type WaitCandidate,
  type WaitEvent,
  type WaitMatch,
  WaitStore,
} from "./wait-store.js";
export { type RunningServer, serveConnect } from "./server.js";
export { createPgSql, type PgSqlOptions, quoteIdent, type Row, type Sql, type SqlTx } from "./sql.js";
