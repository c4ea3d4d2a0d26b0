import type { Duration } from "./duration.js";
import type { ReceivedEvent, StepwiseFunction } from "./function.js";

/** A step's id, or its id with options. */
export type StepId = string | StepOptions;

/** Options of one step. */
export interface StepOptions {
  /** Id of the step; an id may repeat (in a loop), each occurrence is its own step. */
  id: string;
  /** Retries of this step, overriding the function's (0 to 20). */
  retries?: number;
}

/** Options of step.waitForEvent. */
export interface WaitForEventOptions {
  /** Name of the awaited event. */
  event: string;
  /** How long to wait before resolving with null: ms, or a duration such as "7d" (at most one year). */
  timeout: Duration;
  /**
   * CEL expression a candidate event must make true: the run's triggering
   * event is `event`, the candidate `async`, as in
   * `event.data.orderId == async.data.orderId`.
   */
  if?: string;
  /**
   * Shorthand for the equality of one field in both events: `match:
   * "data.orderId"` is `event.data.orderId == async.data.orderId`.
   */
  match?: string;
}

/** Options of step.invoke. */
export interface InvokeOptions<F extends StepwiseFunction<unknown> | string = StepwiseFunction<unknown> | string> {
  /**
   * The function to run: a function made by createFunction (its app and
   * id), or its id as text, "app-id/function-id", or "function-id" for a
   * function of this run's app. It need not be served by this worker.
   */
  function: F;
  /**
   * Data of the invoked run's event, a JSON object of at most 512 KiB of
   * JSON; {} when omitted. The event is named "stepwise/function.invoked".
   */
  data?: Record<string, unknown>;
  /**
   * How long to wait for the invoked run to end (ms, or a duration such as
   * "1h", at most one year). Past it the step fails with a StepError whose
   * cause is named InvokeTimeout; the invoked run keeps running. No limit
   * when omitted.
   */
  timeout?: Duration;
}

/** An event step.sendEvent sends. */
export interface SentEvent {
  /** Its id; derived from the run and the step when omitted. */
  id?: string;
  name: string;
  data: Record<string, unknown>;
  /** When it happened; now when omitted. */
  ts?: Date;
}

/** What a step body gets. */
export interface StepContext {
  /** Id of the run. */
  runId: string;
  /**
   * The step's key (`<id>:<occurrence>`), the same on every attempt and
   * replay: with the run id, an idempotency key for what the step calls.
   */
  stepKey: string;
  /**
   * Aborts when the run is taken from this worker: cancelled with
   * RunService.CancelRun, superseded by a newer execution, or its
   * connection to the executor lost. The reason is a RunAbortedError.
   */
  signal: AbortSignal;
}

/** The step tools a handler receives as `step`. */
export interface StepTools {
  /**
   * Runs fn as a durable step: its result is journaled and, on any later
   * execution of the run, returned without running fn again. The handler
   * proceeds only once the result is committed. The result must be JSON
   * (it is returned as JSON would decode it, on the first run too).
   *
   * A step that throws is retried with backoff (the function's `retries`,
   * or the step's); RetryAfterError picks the time of the next attempt and
   * NonRetriableError stops at once. While it waits for its next attempt
   * the run is suspended and holds no worker slot. When it fails for good
   * the handler receives a StepError.
   *
   * A step id may repeat (in a loop); each occurrence is its own step.
   *
   * The body gets a StepContext whose `signal` aborts when the run is taken
   * from this worker (cancelled, or its connection lost): pass it to `fetch`
   * and the like to stop early. Its result is not journaled then.
   *
   * @example
   * ```ts
   * const payment = await step.run("process-payment", () => charge(order));
   * const label = await step.run({ id: "print-label", retries: 10 }, () => print(order));
   * const page = await step.run("fetch", ({ signal }) => fetch(url, { signal }).then((r) => r.text()));
   * ```
   */
  run<T>(id: StepId, fn: (ctx: StepContext) => Promise<T> | T): Promise<Jsonified<T>>;

  /**
   * Suspends the run for a duration (ms, or a string such as "15s" or
   * "7d", at most one year). The worker drops the handler and frees its
   * slot; a durable timer wakes the run, which replays from its journal.
   *
   * @example
   * ```ts
   * await step.sleep("cool-down", "1h");
   * ```
   */
  sleep(id: string, duration: Duration): Promise<void>;

  /**
   * Sends events from the run, exactly once: each event without an id of
   * its own gets one derived from the run and the step, so an attempt that
   * runs again (a retry, a crash before the step was journaled, a replay)
   * sends the same ids, which the engine stores once. The step's journaled
   * result is the events' ids. Sent with the client that defined the
   * function (`new Stepwise({ url })`); an event the engine refuses fails
   * the step without retries.
   *
   * @example
   * ```ts
   * const [id] = await step.sendEvent("notify-warehouse", { name: "order.paid", data: { orderId } });
   * ```
   */
  sendEvent(id: StepId, events: SentEvent | readonly SentEvent[]): Promise<string[]>;

  /** Suspends the run until a time (at most one year away), like sleep. */
  sleepUntil(id: string, until: Date | string): Promise<void>;

  /**
   * Suspends the run until an event of a name that matches arrives after
   * this step began, and resolves with it, or with null at the timeout.
   * No matching event that arrives after the step began is missed; the
   * window opens when the step before the previous one was journaled, so
   * an event the previous step caused (a webhook racing with its result)
   * counts too. After a sleep or another wait, it opens when that one
   * ended, and the run's own triggering event never counts.
   *
   * @example
   * ```ts
   * const shipment = await step.waitForEvent("wait-for-shipment", {
   *   event: "shipment.created", timeout: "7d", match: "data.orderId",
   * });
   * ```
   */
  waitForEvent(id: string, options: WaitForEventOptions): Promise<ReceivedEvent | null>;

  /**
   * Starts a run of another function and resolves with its output, typed
   * from a function object. The run suspends meanwhile and holds no worker
   * slot; the invoked run is created once, however often this run replays,
   * and its output is journaled as this step's result. When the invoked run
   * fails or is cancelled, when the timeout passes first, or when no worker
   * ever registered the function, the step fails for good with a StepError
   * whose cause is named InvokedRunFailed, InvokedRunCancelled,
   * InvokeTimeout or FunctionNotFound. Cancelling this run cancels the
   * invoked run, and the runs it invoked in turn.
   *
   * @example
   * ```ts
   * const receipt = await step.invoke("charge", { function: chargeCard, data: { orderId }, timeout: "10m" });
   * const report = await step.invoke<Report>("report", { function: "reporting/build-report", data: { month } });
   * ```
   */
  invoke<O>(id: string, options: InvokeOptions<StepwiseFunction<O>>): Promise<O>;
  invoke<O = unknown>(id: string, options: InvokeOptions<string>): Promise<O>;
}

/** What a value becomes after a JSON round trip, roughly. */
export type Jsonified<T> = T extends undefined | void
  ? null
  : T extends { toJSON(): infer J }
    ? J
    : T extends (infer U)[]
      ? Jsonified<U>[]
      : T extends object
        ? { [K in keyof T]: Jsonified<T[K]> }
        : T;
