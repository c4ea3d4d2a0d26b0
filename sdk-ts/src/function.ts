import type { z } from "zod";
import type { Duration } from "./duration.js";
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

/** A trigger that starts a run for every event with this name (that its `if` accepts). */
export interface EventTrigger<N extends string = string> {
  event: N;
  /**
   * CEL expression over the event, bound as `event`, that must be true for
   * a run to start, such as `event.data.total > 100`. Checked when the
   * worker registers.
   */
  if?: string;
}

/**
 * A trigger that starts a run at each tick of a cron schedule, once per
 * tick however many schedulers run. The run's event is named
 * "stepwise/cron", with data `{ cron, timezone, tick }`.
 */
export interface CronTrigger {
  /** Five fields (minute hour day-of-month month day-of-week), or six with seconds first. */
  cron: string;
  /** IANA time zone the schedule is read in, such as "Europe/Paris"; UTC by default. */
  timezone?: string;
}

/** How long to wait before retrying: min(cap, base * factor^(attempt-1)), with jitter. */
export interface Backoff {
  /** Delay before the first retry. Default 1 s. */
  base?: Duration;
  /** Growth of the delay per attempt. Default 2. */
  factor?: number;
  /** Longest delay. Default 5 min. */
  cap?: Duration;
  /** Spread each delay over its upper half at random, so failures do not retry in lockstep. Default true. */
  jitter?: boolean;
}

/** What an onFailure handler receives. */
export interface FailureContext<E> {
  /** The event that triggered the failed run. */
  event: E;
  /** The error the run failed with. */
  error: Error;
  /** Id of the failed run. */
  failedRunId: string;
  /** Step tools: the handler is a durable run of its own. */
  step: StepTools;
  /** Id of this (the onFailure handler's) run. */
  runId: string;
}

/** The declaration of a function. */
export interface FunctionConfig<N extends string = string> {
  /** Id of the function, unique within the app: letters, digits, "-" and "_". */
  id: string;
  /** Human-readable name; the id by default. */
  name?: string;
  /** What starts a run: events, cron schedules, or both. */
  triggers: readonly (EventTrigger<N> | CronTrigger)[];
  /**
   * How many times a failed step, or a handler failing outside any step,
   * is retried: 0 to 20, default 4 (5 attempts). A step can override it.
   */
  retries?: number;
  /** Delay between attempts; exponential with jitter by default. */
  backoff?: Backoff;
  /**
   * Events that cancel a run that has not ended, up to 8 rules: the first
   * event of a rule's name that matches it, sent after the run's event,
   * ends the run CANCELLED (its step in progress sees its signal abort).
   */
  cancelOn?: readonly CancelOn[];
  /**
   * Deadlines of each run, either of which ends it CANCELLED with a reason
   * saying which: `start`, the longest it may wait in the queue before a
   * worker first starts it; `finish`, the longest from that start to its
   * end, sleeps and waits included.
   */
  timeouts?: { start?: Duration; finish?: Duration };
  /**
   * How many runs hold a worker slot at once, counted across every
   * executor: a number (for the whole function), a limit, or up to two
   * limits. Runs over a limit wait in the queue and start, oldest first,
   * as slots of their key free up; a run that sleeps or waits holds no
   * slot.
   */
  concurrency?: number | ConcurrencyOption | readonly ConcurrencyOption[];
  /**
   * How often runs first start, per key: one every `period / limit`, and
   * up to `limit + burst` at once after a quiet spell. Runs over it wait
   * their turn in the queue; none is dropped.
   */
  throttle?: { limit: number; period: Duration; burst?: number; key?: string };
  /**
   * A run's place in the queue of runs waiting to start (for a concurrency
   * limit or a throttle): `run` is CEL over the event giving the seconds
   * it goes ahead of runs created at the same time, -600 to 600.
   */
  priority?: { run: string };
  /**
   * CEL over the event: one run per value per 24 hours; the run of a
   * further event with the same value ends SKIPPED without starting.
   */
  idempotency?: string;
  /**
   * At most `limit` runs start per window of `period` per key; the runs of
   * further events end SKIPPED, with the reason.
   */
  rateLimit?: { limit: number; period: Duration; key?: string };
  /**
   * At most one run per key that has not ended: a new one ends SKIPPED
   * (`mode: "skip"`) or the old one is cancelled (`mode: "cancel"`).
   */
  singleton?: { key?: string; mode: "skip" | "cancel" };
  /**
   * One run per key once `period` passed with no new event (at most
   * `timeout` after the first, however steady the stream): the run's
   * `event` is the last one, `events` all of them. Cron ticks are not
   * debounced. Not with batchEvents.
   */
  debounce?: { period: Duration; key?: string; timeout?: Duration };
  /**
   * One run per key for up to `maxSize` events (1 to 100), or fewer once
   * `timeout` passed since the first: the run's `event` is the first,
   * `events` all of them in the order received. Cron ticks are not
   * batched. Not with debounce.
   */
  batchEvents?: { maxSize: number; timeout: Duration; key?: string };
}

/** A limit of FunctionConfig.concurrency. */
export interface ConcurrencyOption {
  /** Most runs of one key holding a slot at once: 1 to 10,000. */
  limit: number;
  /** CEL over the run's event whose value is the key, such as `event.data.customerId`; one key when omitted. */
  key?: string;
  /** Whose runs share a key: this function's (the default) or every function of the app with the same scope. */
  scope?: "function" | "app";
}

/** A rule of FunctionConfig.cancelOn. */
export interface CancelOn {
  /** Name of the cancelling event. */
  event: string;
  /**
   * CEL expression the cancelling event, `async`, must make true; the
   * run's event is `event`: `event.data.userId == async.data.userId`.
   */
  if?: string;
  /** Shorthand for the equality of one field in both events: `match: "data.userId"`. */
  match?: string;
  /** How long after the run's event the rule holds; as long as the run lasts by default. */
  timeout?: Duration;
}

/** What a handler receives for one run. */
export interface HandlerContext<E> {
  /** The event that triggered the run. */
  event: E;
  /**
   * Every event of the run: those a debounce or batchEvents gathered, in
   * the order received (`event` among them); `[event]` for other runs.
   */
  events: E[];
  /** The step tools. */
  step: StepTools;
  /** Id of the run. */
  runId: string;
}

/** The body of a function. Its return value must be JSON. */
export type Handler<E, R> = (ctx: HandlerContext<E>) => Promise<R> | R;

/**
 * A defined function, ready to give to a Worker. Create it with
 * Stepwise.createFunction. `Output` is what its handler returns, as JSON
 * decodes it: what step.invoke of the function resolves with.
 */
export interface StepwiseFunction<Output = unknown> {
  readonly appId: string;
  readonly config: FunctionConfig;
  /** @internal The function that runs the onFailure handler, registered with this one. */
  readonly failureHandler?: StepwiseFunction | undefined;
  /** @internal Set on a failure handler: the function whose failed runs it handles. */
  readonly handlesFailuresOf?: string | undefined;
  /** @internal */
  readonly handler: Handler<ReceivedEvent, unknown>;
  /** @internal Validates and types an event's data against the trigger's schema. */
  readonly parseEvent: (event: ReceivedEvent) => ReceivedEvent;
  /** @internal cancelOn and timeouts, validated, as the worker registers them. */
  readonly runRules?: RunRulesDeclared | undefined;
  /** @internal Sends events with the client that defined the function (step.sendEvent). */
  readonly sendEvents?: ((events: readonly OutgoingEventData[]) => Promise<string[]>) | undefined;
  /** @internal Never set: carries the type of the handler's output, for step.invoke. */
  readonly "~output"?: Output | undefined;
}

/** @internal An event as step.sendEvent hands it to the client, with the id it must have. */
export interface OutgoingEventData {
  id: string;
  name: string;
  data: Record<string, unknown>;
  ts?: Date | undefined;
}

/** @internal A function's cancelOn rules and timeouts in milliseconds, validated. */
export interface RunRulesDeclared {
  cancelOn: Array<{ event: string; condition: string; timeoutMs?: number | undefined }>;
  concurrency: Array<{ limit: number; key: string; scope: "function" | "app" }>;
  throttle?: { limit: number; periodMs: number; burst: number; key: string } | undefined;
  priority?: string | undefined;
  idempotency?: string | undefined;
  rateLimit?: { limit: number; periodMs: number; key: string } | undefined;
  singleton?: { key: string; mode: "skip" | "cancel" } | undefined;
  debounce?: { periodMs: number; key: string; timeoutMs?: number | undefined } | undefined;
  batchEvents?: { maxSize: number; timeoutMs: number; key: string } | undefined;
  startMs?: number | undefined;
  finishMs?: number | undefined;
}
