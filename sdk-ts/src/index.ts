export { Stepwise, type OutgoingEvent, type RunSelection, type StepwiseOptions } from "./client.js";
export { type Duration, MAX_DURATION_MS } from "./duration.js";
export {
  deserializeError,
  NonRetriableError,
  RetryAfterError,
  RunAbortedError,
  serializeError,
  StepError,
  type SerializedError,
} from "./errors.js";
export type {
  Backoff,
  CancelOn,
  ConcurrencyOption,
  CronTrigger,
  EventData,
  EventSchemas,
  EventTrigger,
  FailureContext,
  FunctionConfig,
  Handler,
  HandlerContext,
  ReceivedEvent,
  StepwiseFunction,
} from "./function.js";
export type { AttemptInfo, RunInfo, RunStatus, StepInfo } from "./run-info.js";
export { DEFAULT_RETRIES, MAX_RETRIES } from "@stepwise/proto";
export { MAX_OUTPUT_BYTES } from "@stepwise/proto";
export { StepwiseError, type StepwiseErrorCode } from "./stepwise-error.js";
export type {
  InvokeOptions,
  Jsonified,
  SentEvent,
  StepContext,
  StepId,
  StepOptions,
  StepTools,
  WaitForEventOptions,
} from "./step-tools.js";
export { Worker, type WorkerOptions } from "./worker.js";
