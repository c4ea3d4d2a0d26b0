export { EventBatches } from "./event-batches.js";
export { handleEvent } from "./event-handling.js";
export { Reconciler } from "./reconciler.js";
export { Scheduler, type SchedulerOptions } from "./scheduler.js";
export { TimerFiring } from "./timer-firing.js";
export { RETENTION_BATCH, RETENTION_SWEEP_MS, RetentionSweeper } from "./retention.js";
