import { DEFAULT_RETRIES, MAX_RETRIES } from "@stepwise/proto";
import { MAX_DURATION_MS, parseDuration } from "./duration.js";
import { NonRetriableError, RetryAfterError, StepError } from "./errors.js";
import type { Backoff } from "./function.js";

/** A function's retry settings, validated. */
export interface RetryPolicy {
  retries: number;
  baseMs: number;
  factor: number;
  capMs: number;
  jitter: boolean;
}

/** Validates retries and backoff; throws a TypeError naming the function and field. */
export function retryPolicy(where: string, retries: number | undefined, backoff: Backoff | undefined): RetryPolicy {
  const r = retries ?? DEFAULT_RETRIES;
  checkRetries(r, `${where}: retries`);
  const factor = backoff?.factor ?? 2;
  if (typeof factor !== "number" || !Number.isFinite(factor) || factor < 1 || factor > 10) {
    throw new TypeError(`${where}: backoff.factor: must be a number from 1 to 10`);
  }
  const baseMs = parseDuration(backoff?.base ?? 1_000, `${where}: backoff.base`);
  const capMs = parseDuration(backoff?.cap ?? 300_000, `${where}: backoff.cap`);
  if (capMs < baseMs) throw new TypeError(`${where}: backoff.cap: must not be shorter than backoff.base`);
  return { retries: r, baseMs, factor, capMs, jitter: backoff?.jitter ?? true };
}

/** Throws a TypeError unless retries is an integer from 0 to MAX_RETRIES. */
export function checkRetries(retries: unknown, what: string): void {
  if (typeof retries !== "number" || !Number.isInteger(retries) || retries < 0 || retries > MAX_RETRIES) {
    throw new TypeError(`${what}: must be an integer from 0 to ${MAX_RETRIES}`);
  }
}

/**
 * When the next attempt after `attempt` failed with err is due, in ms since
 * the epoch, or undefined when err is final: non-retriable, a StepError
 * reaching the handler, or the last attempt.
 */
export function nextAttemptAt(policy: RetryPolicy, retries: number, attempt: number, err: unknown, nowMs: number): number | undefined {
  if (err instanceof NonRetriableError || err instanceof StepError) return undefined;
  if (attempt >= retries + 1) return undefined;
  if (err instanceof RetryAfterError) {
    const at = err.retryAt.getTime();
    // An invalid date falls back to the backoff; a far one is capped at a year.
    if (Number.isFinite(at)) return Math.min(Math.max(nowMs, at), nowMs + MAX_DURATION_MS);
  }
  const delay = Math.min(policy.capMs, policy.baseMs * policy.factor ** (attempt - 1));
  return nowMs + Math.round(policy.jitter ? delay / 2 + Math.random() * (delay / 2) : delay);
}
