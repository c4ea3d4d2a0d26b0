import { inspect } from "node:util";
import { type ErrorData, MAX_ERROR_DEPTH } from "@stepwise/proto";
import { parseDuration } from "./duration.js";

/**
 * Throw NonRetriableError from a step or a handler when trying again cannot
 * help (bad input, a refused payment): the step is not retried and the
 * error is journaled as final.
 *
 * @example
 * ```ts
 * await step.run("charge", () => {
 *   if (!order.card) throw new NonRetriableError("order has no card");
 *   return charge(order);
 * });
 * ```
 */
export class NonRetriableError extends Error {
  override name = "NonRetriableError";
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/**
 * Throw RetryAfterError from a step or a handler to retry it at a given
 * time instead of after the backoff (a rate limit's Retry-After, a system
 * known to be back at some hour). It counts as an attempt: when the
 * retries are exhausted the step fails as with any error.
 *
 * @example
 * ```ts
 * await step.run("call-api", async () => {
 *   const res = await fetch(url);
 *   if (res.status === 429) throw new RetryAfterError("rate limited", Number(res.headers.get("retry-after")) * 1000);
 *   return res.json();
 * });
 * ```
 */
export class RetryAfterError extends Error {
  override name = "RetryAfterError";
  /** When the next attempt may start. */
  readonly retryAt: Date;
  /**
   * @param retryAfter the time of the next attempt, or how long from now
   *   (milliseconds or a duration string such as "30s").
   */
  constructor(message: string, retryAfter: Date | number | string, options?: { cause?: unknown }) {
    super(message, options);
    this.retryAt =
      retryAfter instanceof Date ? retryAfter : new Date(Date.now() + parseDuration(retryAfter, "RetryAfterError retryAfter"));
  }
}

/**
 * StepError is what a handler receives when a step failed for good: its
 * retries are used up, or it threw a NonRetriableError. Its `cause` is the
 * step's last error, rebuilt from the journal. Catch it to handle the
 * failure and continue; uncaught, it fails the run at once, without a retry
 * of the handler.
 *
 * @example
 * ```ts
 * try {
 *   await step.run("charge", () => charge(order));
 * } catch (err) {
 *   if (!(err instanceof StepError)) throw err;
 *   return { charged: false, reason: err.message };
 * }
 * ```
 */
export class StepError extends Error {
  override name = "StepError";
  /** Id of the step that failed. */
  readonly stepId: string;
  constructor(stepId: string, cause: Error) {
    super(`step ${JSON.stringify(stepId)} failed: ${cause.message}`, { cause });
    this.stepId = stepId;
  }
}

/**
 * RunAbortedError is what the step tools throw in a handler whose run this
 * worker no longer holds: the run was cancelled, the worker lost its
 * connection to the executor, a newer execution of the run took over, or
 * the worker was killed. A step in progress rejects with it (once its
 * function returns, or while it waits for its result to be journaled), and
 * so does every later step call that is not in the journal already.
 * Nothing the handler does from then on is recorded, and no result is
 * sent: the run goes on in the execution that took it over (replaying its
 * journal), or stays cancelled. It is not a failure of the run and is not
 * retried as one; let it propagate rather than catch it.
 *
 * @example
 * ```ts
 * try {
 *   await step.run("charge", () => charge(order));
 * } catch (err) {
 *   // Only a failed step is handled here; a RunAbortedError goes on up.
 *   if (!(err instanceof StepError)) throw err;
 *   await step.run("notify", () => notifyDeclined(order));
 * }
 * ```
 */
export class RunAbortedError extends Error {
  override name = "RunAbortedError";
}

/**
 * An error as it crosses the wire and lives in the journal: plain data (name,
 * message, stack, cause, the retry flag) that survives JSON. It is what
 * `RunInfo.error` and `StepInfo.error` hold; `deserializeError` turns it back
 * into an Error. The contract's error data, shared with the services: a
 * `cause` that crossed the wire nests at most 8 levels.
 */
export type SerializedError = ErrorData;

/**
 * Turns anything thrown into its serialised form, keeping name, message,
 * stack, the retry flag and causes (at most 8 levels). The SDK uses it for
 * what steps and handlers throw; use it to store or send an error the same
 * way. Anything that is not an Error becomes an Error whose message shows it.
 */
export function serializeError(err: unknown, depth = 0): SerializedError {
  if (err instanceof Error) {
    const out: SerializedError = { name: withoutNul(err.name), message: withoutNul(err.message) };
    if (err.stack) out.stack = withoutNul(err.stack);
    if (err instanceof NonRetriableError) out.nonRetriable = true;
    if (err.cause !== undefined && depth < MAX_ERROR_DEPTH) out.cause = serializeError(err.cause, depth + 1);
    return out;
  }
  let message: string;
  try {
    message = typeof err === "string" ? err : JSON.stringify(err) ?? String(err);
  } catch {
    // JSON cannot encode it (a cycle, a BigInt inside): inspect still shows
    // its content, where String() would only give "[object Object]".
    message = typeof err === "object" && err !== null ? inspect(err, { depth: 4, breakLength: Infinity }) : String(err);
  }
  return { name: "Error", message: withoutNul(message) };
}

/** The journal cannot store NUL characters (Postgres text and jsonb); shown as U+FFFD instead. */
function withoutNul(s: string): string {
  return s.includes("\u0000") ? s.replaceAll("\u0000", "\uFFFD") : s;
}

/**
 * Rebuilds an Error from its serialised form (a run's error from getRun,
 * say), with the same name, message, stack and causes: a NonRetriableError
 * for one that was, an Error carrying the original name otherwise.
 */
export function deserializeError(s: SerializedError): Error {
  const cause = s.cause ? deserializeError(s.cause) : undefined;
  const opts = cause ? { cause } : undefined;
  let err: Error;
  if (s.name === "NonRetriableError" || s.nonRetriable) err = new NonRetriableError(s.message, opts);
  else err = new Error(s.message, opts);
  err.name = s.name;
  if (s.stack) err.stack = s.stack;
  return err;
}
