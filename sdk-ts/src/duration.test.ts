import { describe, expect, it } from "vitest";
import { MAX_DURATION_MS, parseDuration } from "./duration.js";

describe("parseDuration", () => {
  it("reads each unit", () => {
    expect(parseDuration("500ms", "d")).toBe(500);
    expect(parseDuration("15s", "d")).toBe(15_000);
    expect(parseDuration("10m", "d")).toBe(600_000);
    expect(parseDuration("2h", "d")).toBe(7_200_000);
    expect(parseDuration("7d", "d")).toBe(604_800_000);
    expect(parseDuration("1w", "d")).toBe(604_800_000);
    expect(parseDuration("0s", "d")).toBe(0);
  });

  it("adds up a sum of parts, with or without spaces, and reads fractions", () => {
    expect(parseDuration("1h30m", "d")).toBe(5_400_000);
    expect(parseDuration("1h 30m 15s", "d")).toBe(5_415_000);
    expect(parseDuration("  2m500ms ", "d")).toBe(120_500);
    expect(parseDuration("10 m", "d")).toBe(600_000);
    expect(parseDuration("1.5h", "d")).toBe(5_400_000);
    expect(parseDuration("0.25s", "d")).toBe(250);
    // "ms" is milliseconds, not minutes followed by seconds.
    expect(parseDuration("5ms", "d")).toBe(5);
    expect(parseDuration("5m5s", "d")).toBe(305_000);
  });

  it("takes a number as milliseconds, rounded", () => {
    expect(parseDuration(0, "d")).toBe(0);
    expect(parseDuration(1500, "d")).toBe(1500);
    expect(parseDuration(1.4, "d")).toBe(1);
    expect(parseDuration(MAX_DURATION_MS, "d")).toBe(MAX_DURATION_MS);
  });

  it("accepts up to one year, and not a millisecond more", () => {
    expect(parseDuration("365d", "d")).toBe(MAX_DURATION_MS);
    expect(parseDuration("52w1d", "d")).toBe(MAX_DURATION_MS);
    expect(() => parseDuration("365d1ms", "step.sleep \"x\": duration")).toThrow(
      new TypeError('step.sleep "x": duration: "365d1ms" must be between 0 and one year'),
    );
    expect(() => parseDuration(MAX_DURATION_MS + 1, "t")).toThrow(/^t: \d+ must be between 0 and one year$/);
  });

  it("rejects negative and non-finite numbers", () => {
    for (const bad of [-1, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(() => parseDuration(bad, "timeout")).toThrow(TypeError);
      expect(() => parseDuration(bad, "timeout")).toThrow(/^timeout: .* must be between 0 and one year$/);
    }
  });

  it("rejects text that is not a duration, naming the field and the text", () => {
    for (const bad of ["", "  ", "10", "h", "1y", "1h30", "1hh", "-1s", "1H", "1h,30m", "1 hour", "1e3ms", "1h\t30m"]) {
      let caught: unknown;
      try {
        parseDuration(bad, "backoff.base");
      } catch (err) {
        caught = err;
      }
      expect(caught, bad).toBeInstanceOf(TypeError);
      expect((caught as TypeError).message).toBe(
        `backoff.base: ${JSON.stringify(bad)} is not a duration (such as "500ms", "15s", "10m", "2h", "7d" or "1h30m")`,
      );
    }
  });

  it("rejects other types", () => {
    for (const bad of [null, undefined, {}, [], true, 10n]) {
      expect(() => parseDuration(bad as never, "timeout")).toThrow(
        new TypeError("timeout: must be a number of milliseconds or a duration string"),
      );
    }
  });

  it("gives the same answer on repeated calls (the pattern keeps no state between them)", () => {
    expect(() => parseDuration("1h30", "d")).toThrow(TypeError);
    expect(parseDuration("30m", "d")).toBe(1_800_000);
    expect(parseDuration("30m", "d")).toBe(1_800_000);
  });
});
