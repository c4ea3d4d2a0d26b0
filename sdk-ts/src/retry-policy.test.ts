import { DEFAULT_RETRIES, MAX_RETRIES } from "./index.js";
import { afterEach, describe, expect, it, vi } from "vitest";
import { NonRetriableError, RetryAfterError, StepError } from "./errors.js";
import { checkRetries, nextAttemptAt, retryPolicy, type RetryPolicy } from "./retry-policy.js";

const NOW = Date.UTC(2025, 0, 1);

const exact = (over: Partial<RetryPolicy> = {}): RetryPolicy => ({ retries: 4, baseMs: 1_000, factor: 2, capMs: 300_000, jitter: false, ...over });

afterEach(() => {
  vi.restoreAllMocks();
});

describe("retryPolicy", () => {
  it("defaults to 4 retries, 1 s doubling up to 5 min, with jitter", () => {
    expect(DEFAULT_RETRIES).toBe(4);
    expect(retryPolicy("function f", undefined, undefined)).toEqual({ retries: 4, baseMs: 1_000, factor: 2, capMs: 300_000, jitter: true });
  });

  it("reads the function's retries and backoff, durations as text or ms", () => {
    expect(retryPolicy("function f", 0, { base: "250ms", factor: 3, cap: "1m", jitter: false })).toEqual({
      retries: 0,
      baseMs: 250,
      factor: 3,
      capMs: 60_000,
      jitter: false,
    });
    expect(retryPolicy("function f", MAX_RETRIES, { base: 10, cap: 10 })).toMatchObject({ retries: MAX_RETRIES, baseMs: 10, capMs: 10 });
  });

  it("rejects retries that are not an integer from 0 to 20, naming the function", () => {
    for (const bad of [-1, 21, 1.5, Number.NaN, "3"]) {
      expect(() => retryPolicy("function f", bad as number, undefined)).toThrow(
        new TypeError("function f: retries: must be an integer from 0 to 20"),
      );
    }
    expect(() => checkRetries(undefined, "step \"s\": retries")).toThrow(new TypeError('step "s": retries: must be an integer from 0 to 20'));
    expect(() => checkRetries(0, "x")).not.toThrow();
  });

  it("rejects a bad backoff, naming the field", () => {
    for (const factor of [0.5, 11, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(() => retryPolicy("function f", 1, { factor })).toThrow(new TypeError("function f: backoff.factor: must be a number from 1 to 10"));
    }
    expect(() => retryPolicy("function f", 1, { base: "soon" })).toThrow(/^function f: backoff\.base: "soon" is not a duration/);
    expect(() => retryPolicy("function f", 1, { cap: "400d" })).toThrow(/^function f: backoff\.cap: .* must be between 0 and one year$/);
    expect(() => retryPolicy("function f", 1, { base: "1m", cap: "30s" })).toThrow(
      new TypeError("function f: backoff.cap: must not be shorter than backoff.base"),
    );
  });
});

describe("nextAttemptAt", () => {
  it("waits base * factor^(attempt-1) without jitter", () => {
    const policy = exact();
    expect(nextAttemptAt(policy, 4, 1, new Error("x"), NOW)).toBe(NOW + 1_000);
    expect(nextAttemptAt(policy, 4, 2, new Error("x"), NOW)).toBe(NOW + 2_000);
    expect(nextAttemptAt(policy, 4, 3, new Error("x"), NOW)).toBe(NOW + 4_000);
    expect(nextAttemptAt(policy, 4, 4, new Error("x"), NOW)).toBe(NOW + 8_000);
    expect(nextAttemptAt(exact({ factor: 3, baseMs: 500 }), 4, 3, new Error("x"), NOW)).toBe(NOW + 4_500);
    expect(nextAttemptAt(exact({ factor: 1 }), 4, 4, new Error("x"), NOW)).toBe(NOW + 1_000);
  });

  it("never waits longer than the cap", () => {
    const policy = exact({ capMs: 5_000 });
    expect(nextAttemptAt(policy, 20, 3, new Error("x"), NOW)).toBe(NOW + 4_000);
    expect(nextAttemptAt(policy, 20, 4, new Error("x"), NOW)).toBe(NOW + 5_000);
    expect(nextAttemptAt(policy, 20, 20, new Error("x"), NOW)).toBe(NOW + 5_000);
  });

  it("with jitter, spreads each delay over its upper half", () => {
    const policy = exact({ jitter: true });
    vi.spyOn(Math, "random").mockReturnValue(0);
    expect(nextAttemptAt(policy, 4, 3, new Error("x"), NOW)).toBe(NOW + 2_000);
    vi.spyOn(Math, "random").mockReturnValue(0.999999);
    expect(nextAttemptAt(policy, 4, 3, new Error("x"), NOW)).toBe(NOW + 4_000);
    vi.spyOn(Math, "random").mockReturnValue(0.5);
    expect(nextAttemptAt(policy, 4, 3, new Error("x"), NOW)).toBe(NOW + 3_000);
    // Capped first, then spread: never past the cap.
    vi.spyOn(Math, "random").mockReturnValue(0.999999);
    expect(nextAttemptAt(exact({ jitter: true, capMs: 3_000 }), 20, 10, new Error("x"), NOW)).toBe(NOW + 3_000);
  });

  it("with real randomness, stays within [delay/2, delay]", () => {
    const policy = exact({ jitter: true });
    const seen = new Set<number>();
    for (let i = 0; i < 500; i++) {
      const at = nextAttemptAt(policy, 4, 2, new Error("x"), NOW)!;
      expect(at - NOW).toBeGreaterThanOrEqual(1_000);
      expect(at - NOW).toBeLessThanOrEqual(2_000);
      seen.add(at);
    }
    // It does spread.
    expect(seen.size).toBeGreaterThan(50);
  });

  it("is final on the last attempt, for any number of retries", () => {
    expect(nextAttemptAt(exact(), 4, 4, new Error("x"), NOW)).toBe(NOW + 8_000);
    expect(nextAttemptAt(exact(), 4, 5, new Error("x"), NOW)).toBeUndefined();
    expect(nextAttemptAt(exact(), 4, 6, new Error("x"), NOW)).toBeUndefined();
    expect(nextAttemptAt(exact(), 0, 1, new Error("x"), NOW)).toBeUndefined();
    expect(nextAttemptAt(exact(), 1, 1, new Error("x"), NOW)).toBe(NOW + 1_000);
  });

  it("is final for a NonRetriableError and for a StepError", () => {
    expect(nextAttemptAt(exact(), 4, 1, new NonRetriableError("bad input"), NOW)).toBeUndefined();
    expect(nextAttemptAt(exact(), 4, 1, new StepError("charge", new Error("declined")), NOW)).toBeUndefined();
  });

  it("retries a RetryAfterError at its time, or now when that has passed, while attempts remain", () => {
    expect(nextAttemptAt(exact(), 4, 1, new RetryAfterError("rate limited", new Date(NOW + 42_000)), NOW)).toBe(NOW + 42_000);
    // Beyond what the backoff or its cap would give.
    expect(nextAttemptAt(exact({ capMs: 1_000 }), 4, 1, new RetryAfterError("later", new Date(NOW + 3_600_000)), NOW)).toBe(NOW + 3_600_000);
    expect(nextAttemptAt(exact(), 4, 1, new RetryAfterError("late", new Date(NOW - 5_000)), NOW)).toBe(NOW);
    expect(nextAttemptAt(exact(), 4, 5, new RetryAfterError("last", new Date(NOW + 1_000)), NOW)).toBeUndefined();
  });

  it("retries anything thrown that is not an Error", () => {
    expect(nextAttemptAt(exact(), 4, 1, "a string", NOW)).toBe(NOW + 1_000);
    expect(nextAttemptAt(exact(), 4, 1, undefined, NOW)).toBe(NOW + 1_000);
  });
});
