export { type Bus, type ConsumeEventsOptions, type Delivery, type Subscription, ID_PATTERN } from "./bus.js";
export { type Config, loadConfig } from "./config.js";
export { errorFromProto, errorToProto } from "./error-detail.js";
export { JetStreamBus, type JetStreamBusOptions, backoffMs } from "./jetstream-bus.js";
export {
  type ClaimedRun,
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
export { type RunningServer, serveConnect } from "./server.js";
export { createPgSql, type PgSqlOptions, quoteIdent, type Row, type Sql, type SqlTx } from "./sql.js";
