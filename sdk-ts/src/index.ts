export {
  Stepwise,
  type OutgoingEvent,
  type RunInfo,
  type RunState,
  type StepInfo,
  type StepwiseOptions,
} from "./client.js";
export { deserializeError, NonRetriableError, serializeError, StepError, type SerializedError } from "./errors.js";
export type {
  EventData,
  EventSchemas,
  EventTrigger,
  FunctionConfig,
  Handler,
  HandlerContext,
  ReceivedEvent,
  StepwiseFunction,
} from "./function.js";
export { MAX_OUTPUT_BYTES } from "./run-execution.js";
export type { Jsonified, StepTools } from "./step-tools.js";
export { Worker, type WorkerOptions } from "./worker.js";
