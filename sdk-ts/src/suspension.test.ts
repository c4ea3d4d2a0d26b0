import { timestampMs } from "@bufbuild/protobuf/wkt";
import {
  type Await,
} from "@stepwise/proto";
import { describe, expect, it } from "vitest";
import { Stepwise } from "./client.js";
import { MAX_DURATION_MS } from "./duration.js";
import { NonRetriableError, RetryAfterError, StepError } from "./errors.js";
import type { StepwiseFunction } from "./function.js";
import { errorOf, Harness, journaledError, journaledOutput, HARNESS_RUN_ID, type HarnessOptions, outputOf, ticks } from "./testing/run-execution-harness.js";

// Suspension and retries of a RunExecution, with a fake stream as in
// run-execution.test.ts: sleeps, waits and steps waiting for their next
// attempt park their branch; once no step executes, one Suspend carries
// every await and the handler is dropped.

const RUN_ID = HARNESS_RUN_ID;
const LEASE = 4;
const SECOND = 1_000;
const HOUR = 3_600_000;
const stepwise = new Stepwise({ appId: "t" });

/** A harness on the fake stream, with this suite's lease. */
function harness(fn: StepwiseFunction, opts: Omit<HarnessOptions, "lease"> = {}): Harness {
  return new Harness(fn, { ...opts, lease: LEASE });
}

/** An await as plain data: its key, id, kind and the time in it. */
function describeAwait(a: Await): { key: string; id: string; kind: string; atMs: number | undefined; event?: string; condition?: string } {
  const k = a.kind;
  switch (k.case) {
    case "sleep":
      return { key: a.stepKey, id: a.stepId, kind: "sleep", atMs: k.value.wakeAt && timestampMs(k.value.wakeAt) };
    case "retry":
      return { key: a.stepKey, id: a.stepId, kind: "retry", atMs: k.value.retryAt && timestampMs(k.value.retryAt) };
    case "waitForEvent":
      return {
        key: a.stepKey,
        id: a.stepId,
        kind: "waitForEvent",
        atMs: k.value.timeoutAt && timestampMs(k.value.timeoutAt),
        event: k.value.event,
        condition: k.value.condition,
      };
    default:
      return { key: a.stepKey, id: a.stepId, kind: "none", atMs: undefined };
  }
}

/** The single Suspend sent, its awaits as plain data. */
function onlySuspend(h: Harness): ReturnType<typeof describeAwait>[] {
  expect(h.suspends).toHaveLength(1);
  const s = h.suspends[0]!;
  expect(s.runId).toBe(RUN_ID);
  expect(s.lease).toBe(LEASE);
  return s.awaits.map(describeAwait);
}

/** Expects a time computed as now + offset during [before, after]. */
function expectAround(atMs: number | undefined, before: number, after: number, offset: number): void {
  expect(atMs).toBeGreaterThanOrEqual(before + offset);
  expect(atMs).toBeLessThanOrEqual(after + offset);
}

describe("suspension", () => {
  describe("step.sleep", () => {
    it("suspends only once the steps in flight are acked, then drops the handler", async () => {
      let release!: () => void;
      const gate = new Promise<void>((r) => (release = r));
      let afterSleep = false;
      const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }] }, async ({ step }) => {
        const [charged] = await Promise.all([
          step.run("charge", async () => {
            await gate;
            return "charged";
          }),
          step.sleep("cool-down", "1h"),
        ]);
        afterSleep = true;
        return charged;
      });
      const before = Date.now();
      const h = harness(fn);
      // The step still runs: no suspension.
      await ticks();
      expect(h.sent).toHaveLength(0);
      release();
      await h.until(() => h.stepResults.length === 1, "the step result");
      // Its result is not yet committed: still no suspension.
      await ticks();
      expect(h.kinds).toEqual(["stepResult"]);

      h.ack("charge:0");
      await h.done;
      const after = Date.now();
      expect(h.kinds).toEqual(["stepResult", "suspend"]);
      const [nap] = onlySuspend(h);
      expect(nap).toMatchObject({ key: "cool-down:0", id: "cool-down", kind: "sleep" });
      expectAround(nap!.atMs, before, after, HOUR);
      // Dropped: the handler never gets past the sleep, and no run result is sent.
      await ticks();
      expect(afterSleep).toBe(false);
      expect(h.runResults).toHaveLength(0);
    });

    it("a replay with the sleep journaled continues past it without sending anything for it", async () => {
      let charges = 0;
      const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }] }, async ({ step }) => {
        const [charged] = await Promise.all([
          step.run("charge", () => {
            charges++;
            return "charged";
          }),
          step.sleep("cool-down", "1h"),
        ]);
        const shipped = await step.run("ship", () => "shipped");
        return { charged, shipped };
      });
      const h = harness(fn, {
        autoAck: true,
        journal: [journaledOutput("charge:0", "charged"), journaledOutput("cool-down:0", null)],
      });
      await h.done;
      expect(charges).toBe(0);
      expect(h.kinds).toEqual(["stepResult", "runResult"]);
      expect(h.stepKeys).toEqual(["ship:0"]);
      expect(outputOf(h.runResults[0])).toEqual({ charged: "charged", shipped: "shipped" });
    });

    it("two sleeps at once go in one Suspend; a replay waits only for the one not journaled", async () => {
      const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }] }, async ({ step }) => {
        await Promise.all([step.sleep("short", "1m"), step.sleep("long", 2 * HOUR)]);
        return "woke";
      });
      const before = Date.now();
      const first = harness(fn);
      await first.done;
      const after = Date.now();
      const awaits = onlySuspend(first);
      expect(awaits.map((a) => [a.key, a.kind])).toEqual([
        ["short:0", "sleep"],
        ["long:0", "sleep"],
      ]);
      expectAround(awaits[0]!.atMs, before, after, 60 * SECOND);
      expectAround(awaits[1]!.atMs, before, after, 2 * HOUR);

      const half = harness(fn, { journal: [journaledOutput("short:0", null)] });
      await half.done;
      expect(onlySuspend(half).map((a) => a.key)).toEqual(["long:0"]);
      expect(half.runResults).toHaveLength(0);

      const both = harness(fn, { journal: [journaledOutput("short:0", null), journaledOutput("long:0", null)] });
      await both.done;
      expect(both.kinds).toEqual(["runResult"]);
      expect(outputOf(both.runResults[0])).toBe("woke");
    });

    it("a branch that goes on to another step keeps the run going until that step is acked too", async () => {
      const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }] }, async ({ step }) => {
        await Promise.all([
          step.sleep("nap", "10m"),
          (async () => {
            const a = await step.run("a", () => 1);
            return step.run("b", () => a + 1);
          })(),
        ]);
      });
      const h = harness(fn, { autoAck: true });
      await h.done;
      expect(h.kinds).toEqual(["stepResult", "stepResult", "suspend"]);
      expect(h.stepKeys).toEqual(["a:0", "b:0"]);
      expect(onlySuspend(h).map((a) => a.key)).toEqual(["nap:0"]);
    });

    it("sleeps in sequence suspend one at a time, with keys that count repeated ids", async () => {
      const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }] }, async ({ step }) => {
        await step.sleep("tick", "1s");
        await step.sleep("tick", "1s");
        return "both";
      });
      const first = harness(fn);
      await first.done;
      expect(onlySuspend(first).map((a) => a.key)).toEqual(["tick:0"]);
      const second = harness(fn, { journal: [journaledOutput("tick:0", null)] });
      await second.done;
      expect(onlySuspend(second).map((a) => a.key)).toEqual(["tick:1"]);
    });

    it("sleepUntil waits until the given time, as a Date or as text", async () => {
      const at = Date.now() + 3 * HOUR;
      const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }] }, async ({ step }) => {
        await Promise.all([step.sleepUntil("date", new Date(at)), step.sleepUntil("text", new Date(at + 1).toISOString())]);
      });
      const h = harness(fn);
      await h.done;
      expect(onlySuspend(h)).toEqual([
        { key: "date:0", id: "date", kind: "sleep", atMs: at },
        { key: "text:0", id: "text", kind: "sleep", atMs: at + 1 },
      ]);
    });

    it("an invalid duration or date throws a NonRetriableError the handler can catch, and sends nothing for it", async () => {
      const caught: unknown[] = [];
      const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }] }, async ({ step }) => {
        for (const attempt of [
          () => step.sleep("a", "forever"),
          () => step.sleep("b", -5),
          () => step.sleep("c", "400d"),
          () => step.sleepUntil("d", "not a date"),
          () => step.sleepUntil("e", new Date(Date.now() + MAX_DURATION_MS + HOUR)),
          () => step.sleep("", "1s"),
        ]) {
          try {
            await attempt();
          } catch (err) {
            caught.push(err);
          }
        }
        return "handled";
      });
      const h = harness(fn);
      await h.done;
      expect(h.kinds).toEqual(["runResult"]);
      expect(outputOf(h.runResults[0])).toBe("handled");
      expect(caught).toHaveLength(6);
      for (const err of caught) expect(err).toBeInstanceOf(NonRetriableError);
      expect((caught[0] as Error).message).toBe(
        'step.sleep "a": duration: "forever" is not a duration (such as "500ms", "15s", "10m", "2h", "7d" or "1h30m")',
      );
      expect((caught[2] as Error).message).toBe('step.sleep "c": duration: "400d" must be between 0 and one year');
      expect((caught[3] as Error).message).toBe('step.sleepUntil "d": not a date is not a date');
      expect((caught[4] as Error).message).toBe('step.sleepUntil "e": more than one year away');
      expect((caught[5] as Error).message).toBe("step.sleep needs a non-empty id");
    });

    it("an invalid duration not caught fails the run for good, without retry_at", async () => {
      const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }], retries: 3 }, async ({ step }) => {
        await step.sleep("nap", "a while");
      });
      const h = harness(fn);
      await h.done;
      expect(h.kinds).toEqual(["runResult"]);
      expect(errorOf(h.runResults[0])).toMatchObject({ name: "NonRetriableError", nonRetriable: true });
      expect(h.runResults[0]!.retryAt).toBeUndefined();
    });

    it("a sleep the executor refused (journaled as an error) throws StepError on replay", async () => {
      const caught: unknown[] = [];
      const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }] }, async ({ step }) => {
        await step.sleep("nap", "1h").catch((err: unknown) => caught.push(err));
        await step.sleepUntil("until", new Date(Date.now() + HOUR)).catch((err: unknown) => caught.push(err));
        return "after";
      });
      const refused = { name: "InvalidAwait", message: 'step "nap": the sleep\'s end is more than a year away', nonRetriable: true };
      const h = harness(fn, { journal: [journaledError("nap:0", refused), journaledError("until:0", refused)] });
      await h.done;
      expect(outputOf(h.runResults[0])).toBe("after");
      expect(caught.map((e) => (e instanceof StepError ? [e.stepId, (e.cause as Error).message] : e))).toEqual([
        ["nap", refused.message],
        ["until", refused.message],
      ]);
    });
  });

  describe("step.waitForEvent", () => {
    it("with match, waits for the event whose field equals the run's event's", async () => {
      const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "order.placed" }] }, async ({ step }) => {
        await step.waitForEvent("wait-for-shipment", { event: "shipment.created", timeout: "7d", match: "data.orderId" });
      });
      const before = Date.now();
      const h = harness(fn);
      await h.done;
      const after = Date.now();
      const [w] = onlySuspend(h);
      expect(w).toMatchObject({
        key: "wait-for-shipment:0",
        id: "wait-for-shipment",
        kind: "waitForEvent",
        event: "shipment.created",
        condition: "event.data.orderId == async.data.orderId",
      });
      expectAround(w!.atMs, before, after, 7 * 24 * HOUR);
    });

    it("with if and match, requires both; with if alone, the expression as given; with neither, any event", async () => {
      const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }] }, async ({ step }) => {
        await Promise.all([
          step.waitForEvent("both", { event: "x", timeout: 1_000, if: "async.data.ok || async.data.force", match: "data.a.b" }),
          step.waitForEvent("if", { event: "x", timeout: 1_000, if: "async.data.total > event.data.total" }),
          step.waitForEvent("any", { event: "x", timeout: 1_000 }),
        ]);
      });
      const h = harness(fn);
      await h.done;
      expect(onlySuspend(h).map((a) => [a.key, a.condition])).toEqual([
        ["both:0", "(async.data.ok || async.data.force) && (event.data.a.b == async.data.a.b)"],
        ["if:0", "async.data.total > event.data.total"],
        ["any:0", ""],
      ]);
    });

    it("a wait and a sleep at once go in one Suspend", async () => {
      const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }] }, async ({ step }) => {
        const [ev] = await Promise.all([step.waitForEvent("approval", { event: "approved", timeout: "1d" }), step.sleep("reminder", "1h")]);
        return ev;
      });
      const h = harness(fn);
      await h.done;
      expect(onlySuspend(h).map((a) => [a.key, a.kind])).toEqual([
        ["approval:0", "waitForEvent"],
        ["reminder:0", "sleep"],
      ]);
    });

    it("a journaled event comes back with ts as a Date; a journaled timeout as null", async () => {
      const seen: unknown[] = [];
      const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }] }, async ({ step }) => {
        const shipped = await step.waitForEvent("shipped", { event: "shipment.created", timeout: "1d" });
        const paid = await step.waitForEvent("paid", { event: "invoice.paid", timeout: "1d" });
        seen.push(shipped, paid);
        return { tsIsDate: shipped?.ts instanceof Date, paid };
      });
      const ts = "2025-03-04T05:06:07.089Z";
      const h = harness(fn, {
        journal: [
          journaledOutput("shipped:0", { id: "ev-9", name: "shipment.created", data: { orderId: "o-1" }, ts }),
          journaledOutput("paid:0", null),
        ],
      });
      await h.done;
      expect(h.kinds).toEqual(["runResult"]);
      expect(seen).toEqual([{ id: "ev-9", name: "shipment.created", data: { orderId: "o-1" }, ts: new Date(ts) }, null]);
      expect(outputOf(h.runResults[0])).toEqual({ tsIsDate: true, paid: null });
    });

    it("a wait the executor refused (journaled as an error) throws StepError on replay", async () => {
      let caught: unknown;
      const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }] }, async ({ step }) => {
        try {
          await step.waitForEvent("w", { event: "x", timeout: "1h", if: "async.data.x ==" });
        } catch (err) {
          caught = err;
        }
        return "handled";
      });
      const refused = { name: "InvalidConditionError", message: 'step "w": if: invalid CEL expression: bad', nonRetriable: true };
      const h = harness(fn, { journal: [journaledError("w:0", refused)] });
      await h.done;
      expect(caught).toBeInstanceOf(StepError);
      expect(((caught as StepError).cause as Error).name).toBe("InvalidConditionError");
      expect(outputOf(h.runResults[0])).toBe("handled");
    });

    it("invalid options throw a NonRetriableError naming the step, and send nothing for it", async () => {
      const caught: Error[] = [];
      const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }] }, async ({ step }) => {
        for (const options of [
          { event: "", timeout: "1h" },
          { event: "x".repeat(257), timeout: "1h" },
          { event: "x", timeout: "eventually" },
          { event: "x", timeout: "1h", match: "data..orderId" },
          { event: "x", timeout: "1h", match: "event.data.orderId == 1" },
          { event: "x", timeout: "1h", if: " " },
        ]) {
          try {
            await step.waitForEvent("w", options);
          } catch (err) {
            caught.push(err as Error);
          }
        }
        return "handled";
      });
      const h = harness(fn);
      await h.done;
      expect(h.kinds).toEqual(["runResult"]);
      expect(caught.map((e) => [e.name, e.message])).toEqual([
        ["NonRetriableError", 'step.waitForEvent "w": event must be an event name of 1-256 characters'],
        ["NonRetriableError", 'step.waitForEvent "w": event must be an event name of 1-256 characters'],
        ["NonRetriableError", 'step.waitForEvent "w": timeout: "eventually" is not a duration (such as "500ms", "15s", "10m", "2h", "7d" or "1h30m")'],
        ["NonRetriableError", 'step.waitForEvent "w": match must be a field path such as "data.orderId"'],
        ["NonRetriableError", 'step.waitForEvent "w": match must be a field path such as "data.orderId"'],
        ["NonRetriableError", 'step.waitForEvent "w": if must be a CEL expression'],
      ]);
    });
  });

  describe("retries of a step", () => {
    const noJitter = { base: "1s", factor: 2, jitter: false } as const;

    it("a failed attempt with retries left is sent with retry_at, acked, then suspends with a retry await", async () => {
      let afterStep = false;
      const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }], backoff: noJitter }, async ({ step }) => {
        await step.run("charge", () => {
          throw new TypeError("gateway down");
        });
        afterStep = true;
      });
      const before = Date.now();
      const h = harness(fn);
      await h.until(() => h.stepResults.length === 1, "the failed attempt");
      const after = Date.now();
      const r = h.stepResults[0]!;
      expect(r.stepKey).toBe("charge:0");
      expect(r.attempt).toBe(1);
      expect(errorOf(r)).toMatchObject({ name: "TypeError", message: "gateway down", nonRetriable: false });
      expect(r.retryAt).toBeDefined();
      const retryAtMs = timestampMs(r.retryAt!);
      expectAround(retryAtMs, before, after, SECOND);
      // Not committed yet: no suspension.
      await ticks();
      expect(h.kinds).toEqual(["stepResult"]);

      h.ack("charge:0");
      await h.done;
      expect(onlySuspend(h)).toEqual([{ key: "charge:0", id: "charge", kind: "retry", atMs: retryAtMs }]);
      await ticks();
      expect(afterStep).toBe(false);
      expect(h.runResults).toHaveLength(0);
    });

    it("takes the attempt number from the step's failed attempts, with the backoff that goes with it", async () => {
      const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }], backoff: noJitter }, async ({ step }) => {
        await step.run("other", () => "fine");
        await step.run("charge", () => {
          throw new Error("still down");
        });
      });
      const before = Date.now();
      const h = harness(fn, { autoAck: true, stepAttempts: { "charge:0": 2 } });
      await h.done;
      const after = Date.now();
      expect(h.stepResults.map((r) => [r.stepKey, r.attempt])).toEqual([
        ["other:0", 1],
        ["charge:0", 3],
      ]);
      // Third attempt failed: the fourth comes after base * factor^2.
      expectAround(timestampMs(h.stepResults[1]!.retryAt!), before, after, 4 * SECOND);
      expect(onlySuspend(h).map((a) => [a.key, a.kind])).toEqual([["charge:0", "retry"]]);
    });

    it("the last attempt's error is final: no retry_at, and the handler gets a StepError", async () => {
      let caught: unknown;
      const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }], retries: 2 }, async ({ step }) => {
        try {
          await step.run("charge", () => {
            throw new Error("down for good");
          });
        } catch (err) {
          caught = err;
        }
        return "gave up";
      });
      const h = harness(fn, { autoAck: true, stepAttempts: { "charge:0": 2 } });
      await h.done;
      expect(h.stepResults).toHaveLength(1);
      expect(h.stepResults[0]!.attempt).toBe(3);
      expect(h.stepResults[0]!.retryAt).toBeUndefined();
      expect(h.suspends).toHaveLength(0);
      expect(caught).toBeInstanceOf(StepError);
      expect(((caught as StepError).cause as Error).message).toBe("down for good");
      expect(outputOf(h.runResults[0])).toBe("gave up");
    });

    it("a step's own retries override the function's", async () => {
      const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }], retries: 0, backoff: noJitter }, async ({ step }) => {
        await Promise.allSettled([
          step.run({ id: "once", retries: 0 }, () => {
            throw new Error("a");
          }),
          step.run({ id: "twice", retries: 1 }, () => {
            throw new Error("b");
          }),
          step.run({ id: "more", retries: 5 }, () => {
            throw new Error("c");
          }),
          step.run("default", () => {
            throw new Error("d");
          }),
        ]);
      });
      const h = harness(fn, { autoAck: true, stepAttempts: { "twice:0": 1 } });
      await h.done;
      const byKey = Object.fromEntries(h.stepResults.map((r) => [r.stepKey, { attempt: r.attempt, retry: r.retryAt !== undefined }]));
      expect(byKey).toEqual({
        "once:0": { attempt: 1, retry: false },
        "twice:0": { attempt: 2, retry: false },
        "more:0": { attempt: 1, retry: true },
        "default:0": { attempt: 1, retry: false },
      });
      expect(onlySuspend(h).map((a) => [a.key, a.kind])).toEqual([["more:0", "retry"]]);
    });

    it("a step woken before its retry time waits for it again instead of running early; one due runs", async () => {
      let runs = 0;
      const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }] }, async ({ step }) =>
        step.run("flaky", () => ++runs),
      );
      const later = Date.now() + 60_000;
      const early = harness(fn, { autoAck: true, stepAttempts: { "flaky:0": 1 }, retryAt: { "flaky:0": later } });
      await early.done;
      expect(runs).toBe(0);
      expect(early.stepResults).toEqual([]);
      expect(onlySuspend(early).map((a) => [a.key, a.kind])).toEqual([["flaky:0", "retry"]]);
      const retry = early.suspends[0]!.awaits[0]!.kind;
      expect(retry.case === "retry" && timestampMs(retry.value.retryAt!)).toBe(later);

      const due = harness(fn, { autoAck: true, stepAttempts: { "flaky:0": 1 }, retryAt: { "flaky:0": Date.now() - 1 } });
      await due.done;
      expect(runs).toBe(1);
      expect(due.stepResults.map((r) => r.attempt)).toEqual([2]);
    });

    it("rejects a step's retries out of range without running it", async () => {
      let ran = false;
      let caught: unknown;
      const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }] }, async ({ step }) => {
        try {
          await step.run({ id: "s", retries: 21 }, () => {
            ran = true;
          });
        } catch (err) {
          caught = err;
        }
        return "ok";
      });
      const h = harness(fn);
      await h.done;
      expect(ran).toBe(false);
      expect(caught).toBeInstanceOf(NonRetriableError);
      expect((caught as Error).message).toBe('step "s": retries: must be an integer from 0 to 20');
      expect(h.kinds).toEqual(["runResult"]);
    });

    it("a RetryAfterError sets retry_at to its time", async () => {
      const at = Date.now() + 10 * 60 * SECOND;
      const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }] }, async ({ step }) => {
        await step.run("call-api", () => {
          throw new RetryAfterError("rate limited", new Date(at));
        });
      });
      const h = harness(fn, { autoAck: true });
      await h.done;
      expect(timestampMs(h.stepResults[0]!.retryAt!)).toBe(at);
      expect(errorOf(h.stepResults[0])).toMatchObject({ name: "RetryAfterError", message: "rate limited" });
      expect(onlySuspend(h)).toEqual([{ key: "call-api:0", id: "call-api", kind: "retry", atMs: at }]);
    });

    it("a NonRetriableError is final at once: no retry_at, no suspension", async () => {
      const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }], retries: 5 }, async ({ step }) => {
        await step.run("validate", () => {
          throw new NonRetriableError("order invalid");
        });
      });
      const h = harness(fn, { autoAck: true });
      await h.done;
      expect(h.stepResults[0]!.retryAt).toBeUndefined();
      expect(errorOf(h.stepResults[0])).toMatchObject({ name: "NonRetriableError", nonRetriable: true });
      expect(h.suspends).toHaveLength(0);
      expect(errorOf(h.runResults[0]).name).toBe("StepError");
      expect(h.runResults[0]!.retryAt).toBeUndefined();
    });

    it("a retry waits for the other steps in flight, and their results are sent first", async () => {
      let release!: () => void;
      const gate = new Promise<void>((r) => (release = r));
      const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }], backoff: noJitter }, async ({ step }) => {
        await Promise.all([
          step.run("flaky", () => {
            throw new Error("flaked");
          }),
          step.run("slow", async () => {
            await gate;
            return "slow";
          }),
        ]);
      });
      const h = harness(fn, { autoAck: true });
      await h.until(() => h.stepResults.length === 1, "the failed attempt");
      await ticks();
      expect(h.suspends).toHaveLength(0);
      release();
      await h.done;
      expect(h.kinds).toEqual(["stepResult", "stepResult", "suspend"]);
      expect(h.stepKeys).toEqual(["flaky:0", "slow:0"]);
      expect(onlySuspend(h).map((a) => [a.key, a.kind])).toEqual([["flaky:0", "retry"]]);
    });

    it("an ack carrying a result an earlier execution journaled continues with it instead of retrying", async () => {
      const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }] }, async ({ step }) => {
        const v = await step.run("pick", () => {
          throw new Error("mine failed");
        });
        return { v };
      });
      const h = harness(fn);
      await h.until(() => h.stepResults.length === 1, "the failed attempt");
      expect(h.stepResults[0]!.retryAt).toBeDefined();
      h.ack("pick:0", journaledOutput("pick:0", "theirs"));
      await h.done;
      expect(h.suspends).toHaveLength(0);
      expect(outputOf(h.runResults[0])).toEqual({ v: "theirs" });
    });
  });

  describe("retries of the handler", () => {
    const throwing = (retries: number, err: () => unknown) =>
      stepwise.createFunction({ id: "f", triggers: [{ event: "e" }], retries, backoff: { base: "2s", jitter: false } }, async () => {
        throw err();
      });

    it("an error outside any step sends the run result with retry_at while attempts remain", async () => {
      const fn = throwing(2, () => new TypeError("config missing"));
      for (const [attempt, delay] of [
        [1, 2 * SECOND],
        [2, 4 * SECOND],
      ] as const) {
        const before = Date.now();
        const h = harness(fn, { attempt });
        await h.done;
        const after = Date.now();
        expect(h.kinds).toEqual(["runResult"]);
        expect(errorOf(h.runResults[0])).toMatchObject({ name: "TypeError", message: "config missing" });
        expectAround(timestampMs(h.runResults[0]!.retryAt!), before, after, delay);
      }
    });

    it("on the last attempt the error is final", async () => {
      const h = harness(throwing(2, () => new Error("again")), { attempt: 3 });
      await h.done;
      expect(errorOf(h.runResults[0]).message).toBe("again");
      expect(h.runResults[0]!.retryAt).toBeUndefined();
    });

    it("with no retries the first error is final; an attempt of 0 counts as the first", async () => {
      const none = harness(throwing(0, () => new Error("x")), { attempt: 1 });
      await none.done;
      expect(none.runResults[0]!.retryAt).toBeUndefined();
      const zero = harness(throwing(1, () => new Error("x")), { attempt: 0 });
      await zero.done;
      expect(zero.runResults[0]!.retryAt).toBeDefined();
    });

    it("a RetryAfterError sets retry_at to its time; a NonRetriableError has none", async () => {
      const at = Date.now() + HOUR;
      const later = harness(throwing(3, () => new RetryAfterError("maintenance", new Date(at))));
      await later.done;
      expect(timestampMs(later.runResults[0]!.retryAt!)).toBe(at);

      const never = harness(throwing(3, () => new NonRetriableError("bad order")));
      await never.done;
      expect(errorOf(never.runResults[0])).toMatchObject({ name: "NonRetriableError", nonRetriable: true });
      expect(never.runResults[0]!.retryAt).toBeUndefined();
    });

    it("a StepError left uncaught is final even with attempts left", async () => {
      const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }], retries: 3 }, async ({ step }) => {
        await step.run("charge", () => "never runs");
      });
      const h = harness(fn, { journal: [journaledError("charge:0", { name: "Error", message: "declined" })] });
      await h.done;
      expect(errorOf(h.runResults[0])).toMatchObject({ name: "StepError", message: 'step "charge" failed: declined' });
      expect(h.runResults[0]!.retryAt).toBeUndefined();
    });
  });
});
