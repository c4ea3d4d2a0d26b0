import type { z } from "zod";
import type { StepTools } from "./step-tools.js";

/** Maps event names to the zod schema of their data. */
export type EventSchemas = Record<string, z.ZodType>;

/** The data type of an event: its schema's output, or any JSON object. */
export type EventData<S extends EventSchemas, N extends string> = string extends keyof S
  ? Record<string, unknown>
  : N extends keyof S
    ? z.output<S[N]>
    : Record<string, unknown>;

/** An event as a handler receives it. */
export interface ReceivedEvent<N extends string = string, D = Record<string, unknown>> {
  id: string;
  name: N;
  data: D;
  /** When the event happened. */
  ts: Date;
}

/** A trigger that starts a run for every event with this name. */
export interface EventTrigger<N extends string = string> {
  event: N;
}

/** The declaration of a function. */
export interface FunctionConfig<N extends string = string> {
  /** Id of the function, unique within the app: letters, digits, "-" and "_". */
  id: string;
  /** Human-readable name; the id by default. */
  name?: string;
  /** What starts a run. */
  triggers: readonly EventTrigger<N>[];
  /** How many times a failed step is retried. */
  retries?: number;
}

/** What a handler receives for one run. */
export interface HandlerContext<E> {
  /** The event that triggered the run. */
  event: E;
  /** The step tools. */
  step: StepTools;
  /** Id of the run. */
  runId: string;
}

/** The body of a function. Its return value must be JSON. */
export type Handler<E, R> = (ctx: HandlerContext<E>) => Promise<R> | R;

/**
 * A defined function, ready to give to a Worker. Create it with
 * Stepwise.createFunction.
 */
export interface StepwiseFunction {
  readonly appId: string;
  readonly config: FunctionConfig;
  /** @internal */
  readonly handler: Handler<ReceivedEvent, unknown>;
  /** @internal Validates and types an event's data against the trigger's schema. */
  readonly parseEvent: (event: ReceivedEvent) => ReceivedEvent;
}
