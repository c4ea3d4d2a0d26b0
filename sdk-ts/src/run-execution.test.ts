import { create } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import {
  JournalEntrySchema,
} from "@stepwise/proto";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { Stepwise } from "./client.js";
import { NonRetriableError, RunAbortedError, StepError } from "./errors.js";
import type { StepwiseFunction } from "./function.js";
import { MAX_OUTPUT_BYTES } from "@stepwise/proto";
import { errorOf, Harness, journaledError, journaledOutput, HARNESS_EVENT_TS, HARNESS_RUN_ID, type HarnessOptions, outputOf, ticks } from "./testing/run-execution-harness.js";

const RUN_ID = HARNESS_RUN_ID;
const LEASE = 7;
const EVENT_TS = HARNESS_EVENT_TS;
const stepwise = new Stepwise({ appId: "t" });

/** A harness on the fake stream, with this suite's lease. */
function harness(fn: StepwiseFunction, opts: Omit<HarnessOptions, "lease"> = {}): Harness {
  return new Harness(fn, { ...opts, lease: LEASE });
}

describe("RunExecution", () => {
  describe("a new step", () => {
    it("sends its result and holds the handler until the ack", async () => {
      let ran = 0;
      let proceeded = false;
      const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }] }, async ({ step }) => {
        const paid = await step.run("charge", () => {
          ran++;
          return { amount: 5, currency: "EUR" };
        });
        proceeded = true;
        return paid;
      });
      const h = harness(fn);
      await h.until(() => h.stepResults.length === 1, "the step result");

      const r = h.stepResults[0]!;
      expect(r.runId).toBe(RUN_ID);
      expect(r.lease).toBe(LEASE);
      expect(r.stepKey).toBe("charge:0");
      expect(r.stepId).toBe("charge");
      expect(r.attempt).toBe(1);
      expect(r.result).toEqual({ case: "outputJson", value: '{"amount":5,"currency":"EUR"}' });
      expect(r.startedAt).toBeDefined();
      expect(r.endedAt).toBeDefined();
      expect(timestampMs(r.endedAt!)).toBeGreaterThanOrEqual(timestampMs(r.startedAt!));

      // Not durable yet: the handler must not move on.
      await ticks();
      expect(proceeded).toBe(false);
      expect(h.runResult).toBeUndefined();

      // An ack for some other step does not release it.
      h.ack("charge:1");
      h.ack("other:0");
      await ticks();
      expect(proceeded).toBe(false);

      h.ack("charge:0");
      await h.done;
      expect(proceeded).toBe(true);
      expect(ran).toBe(1);
      expect(h.stepResults).toHaveLength(1);
      expect(h.runResults).toHaveLength(1);
      expect(outputOf(h.runResult)).toEqual({ amount: 5, currency: "EUR" });
    });

    it("gives repeated step ids the keys id:0, id:1, ...", async () => {
      const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }] }, async ({ step }) => {
        const out: number[] = [];
        for (let i = 0; i < 3; i++) {
          out.push(await step.run("item", () => i * 10));
          await step.run("log", () => null);
        }
        return out;
      });
      const h = harness(fn, { autoAck: true });
      await h.done;
      expect(h.stepKeys).toEqual(["item:0", "log:0", "item:1", "log:1", "item:2", "log:2"]);
      expect(h.stepResults.map((r) => r.stepId)).toEqual(["item", "log", "item", "log", "item", "log"]);
      expect(outputOf(h.runResult)).toEqual([0, 10, 20]);
    });

    it("rejects an empty step id as non-retriable without sending anything", async () => {
      let caught: unknown;
      const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }] }, async ({ step }) => {
        try {
          await step.run("", () => 1);
        } catch (err) {
          caught = err;
        }
        return "ok";
      });
      const h = harness(fn);
      await h.done;
      expect(caught).toBeInstanceOf(NonRetriableError);
      expect(h.stepResults).toHaveLength(0);
    });
  });

  describe("replay of a recorded journal", () => {
    function orderFunction(calls: Record<string, number>) {
      const count = (id: string) => (calls[id] = (calls[id] ?? 0) + 1);
      return stepwise.createFunction({ id: "order", triggers: [{ event: "order.placed" }], retries: 0 }, async ({ event, step }) => {
        const order = await step.run("load", () => {
          count("load");
          return { id: event.data["orderId"], at: new Date(EVENT_TS), note: undefined };
        });
        const prices = await Promise.all([
          step.run("price", async () => {
            count("price");
            await new Promise((r) => setTimeout(r, 5));
            return 3;
          }),
          step.run("price", () => {
            count("price");
            return 4;
          }),
        ]);
        let failure = "";
        try {
          await step.run("flaky", () => {
            count("flaky");
            throw new TypeError("gateway down");
          });
        } catch (err) {
          if (!(err instanceof StepError)) throw err;
          const cause = err.cause as Error;
          failure = `${err.stepId}: ${cause.name}: ${cause.message}`;
        }
        const total = await step.run("total", () => {
          count("total");
          return prices[0] + prices[1];
        });
        await step.run("notify", () => {
          count("notify");
        });
        return { order, prices, failure, total };
      });
    }

    it("returns the recorded values without running the steps, and the handler ends the same", async () => {
      const firstCalls: Record<string, number> = {};
      const first = harness(orderFunction(firstCalls), {
        autoAck: true,
        event: { name: "order.placed", data: { orderId: "o-1" } },
      });
      await first.done;
      expect(firstCalls).toEqual({ load: 1, price: 2, flaky: 1, total: 1, notify: 1 });
      // The second "price" finishes first, so it is sent first, under the key of its call order.
      expect(first.stepKeys).toEqual(["load:0", "price:1", "price:0", "flaky:0", "total:0", "notify:0"]);
      const expected = {
        order: { id: "o-1", at: new Date(EVENT_TS).toISOString() },
        prices: [3, 4],
        failure: "flaky: TypeError: gateway down",
        total: 7,
      };
      expect(outputOf(first.runResult)).toEqual(expected);

      const journal = first.journal();
      const replayCalls: Record<string, number> = {};
      // No autoAck: a replay that sent anything would hang and time out.
      const replay = harness(orderFunction(replayCalls), {
        journal,
        event: { name: "order.placed", data: { orderId: "o-1" } },
      });
      await replay.done;
      expect(replayCalls).toEqual({});
      expect(replay.stepResults).toHaveLength(0);
      expect(replay.runResults).toHaveLength(1);
      expect(outputOf(replay.runResult)).toEqual(expected);
      expect(replay.runResult?.result).toEqual(first.runResult?.result);
    });

    it("replays a partial journal and runs only the steps after it", async () => {
      const firstCalls: Record<string, number> = {};
      const first = harness(orderFunction(firstCalls), {
        autoAck: true,
        event: { name: "order.placed", data: { orderId: "o-2" } },
      });
      await first.done;
      // The worker died after "flaky" was journaled.
      const partial = first.journal().filter((e) => ["load:0", "price:0", "price:1", "flaky:0"].includes(e.stepKey));

      const calls: Record<string, number> = {};
      const resumed = harness(orderFunction(calls), {
        autoAck: true,
        journal: partial,
        event: { name: "order.placed", data: { orderId: "o-2" } },
      });
      await resumed.done;
      expect(calls).toEqual({ total: 1, notify: 1 });
      expect(resumed.stepKeys).toEqual(["total:0", "notify:0"]);
      expect(resumed.runResult?.result).toEqual(first.runResult?.result);
    });

    it("makes step.run throw StepError for a journaled error, which the handler can catch", async () => {
      let ran = false;
      let caught: unknown;
      const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }] }, async ({ step }) => {
        try {
          await step.run("charge", () => {
            ran = true;
            return "charged";
          });
        } catch (err) {
          caught = err;
        }
        return step.run("refund-fallback", () => "fallback");
      });
      const h = harness(fn, {
        autoAck: true,
        journal: [journaledError("charge:0", { name: "CardDeclinedError", message: "card declined", nonRetriable: true })],
      });
      await h.done;

      expect(ran).toBe(false);
      expect(caught).toBeInstanceOf(StepError);
      const err = caught as StepError;
      expect(err.stepId).toBe("charge");
      expect(err.message).toBe('step "charge" failed: card declined');
      const cause = err.cause as Error;
      expect(cause.name).toBe("CardDeclinedError");
      expect(cause.message).toBe("card declined");
      expect(cause).toBeInstanceOf(NonRetriableError);
      // The handler carried on past the failure.
      expect(h.stepKeys).toEqual(["refund-fallback:0"]);
      expect(outputOf(h.runResult)).toBe("fallback");
    });

    it("is not confused by steps called in another order: keys depend on the id, not the position", async () => {
      const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }] }, async ({ step }) => {
        const b = await step.run("b", () => "live-b");
        const a = await step.run("a", () => "live-a");
        return [a, b];
      });
      const h = harness(fn, { journal: [journaledOutput("a:0", "rec-a"), journaledOutput("b:0", "rec-b")] });
      await h.done;
      expect(h.stepResults).toHaveLength(0);
      expect(outputOf(h.runResult)).toEqual(["rec-a", "rec-b"]);
    });

    it("non-determinism: a step the journal does not know runs as new, and the orphaned entry is ignored", async () => {
      const v1Calls: string[] = [];
      const v1 = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }] }, async ({ step }) => {
        const a = await step.run("a", () => (v1Calls.push("a"), "a1"));
        const b = await step.run("b", () => (v1Calls.push("b"), "b1"));
        return [a, b];
      });
      const recorded = harness(v1, { autoAck: true });
      await recorded.done;
      expect(recorded.stepKeys).toEqual(["a:0", "b:0"]);

      // The code changed between executions: "b" became "c".
      const v2Calls: string[] = [];
      const v2 = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }] }, async ({ step }) => {
        const a = await step.run("a", () => (v2Calls.push("a"), "a2"));
        const c = await step.run("c", () => (v2Calls.push("c"), "c2"));
        return [a, c];
      });
      const replay = harness(v2, { autoAck: true, journal: recorded.journal() });
      await replay.done;

      // What happens today: no non-determinism error is raised. "a" comes
      // from the journal, "c" (key c:0, not journaled) runs as a new step,
      // and the journaled "b:0" is silently never read.
      expect(v2Calls).toEqual(["c"]);
      expect(replay.stepKeys).toEqual(["c:0"]);
      expect(replay.runResults).toHaveLength(1);
      expect(outputOf(replay.runResult)).toEqual(["a1", "c2"]);
    });
  });

  describe("a failing step", () => {
    it("sends an error result and, after the ack, the handler gets StepError", async () => {
      let caught: unknown;
      let proceeded = false;
      const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }], retries: 0 }, async ({ step }) => {
        try {
          await step.run("charge", () => {
            throw new TypeError("gateway down");
          });
        } catch (err) {
          caught = err;
        }
        proceeded = true;
        return "handled";
      });
      const h = harness(fn);
      await h.until(() => h.stepResults.length === 1, "the step result");
      const r = h.stepResults[0]!;
      expect(r.stepKey).toBe("charge:0");
      expect(r.lease).toBe(LEASE);
      const detail = errorOf(r);
      expect(detail.name).toBe("TypeError");
      expect(detail.message).toBe("gateway down");
      expect(detail.nonRetriable).toBe(false);
      expect(detail.stack).toContain("gateway down");

      await ticks();
      expect(proceeded).toBe(false);
      expect(caught).toBeUndefined();

      h.ack("charge:0");
      await h.done;
      expect(proceeded).toBe(true);
      expect(caught).toBeInstanceOf(StepError);
      expect((caught as StepError).stepId).toBe("charge");
      expect(((caught as StepError).cause as Error).name).toBe("TypeError");
      expect(((caught as StepError).cause as Error).message).toBe("gateway down");
      expect(outputOf(h.runResult)).toBe("handled");
    });

    it("flags a NonRetriableError as non-retriable", async () => {
      const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }] }, async ({ step }) => {
        await step.run("charge", () => {
          throw new NonRetriableError("no card", { cause: new Error("card is null") });
        });
      });
      const h = harness(fn, { autoAck: true });
      await h.done;
      const detail = errorOf(h.stepResults[0]);
      expect(detail).toMatchObject({ name: "NonRetriableError", message: "no card", nonRetriable: true });
      expect(detail.cause).toMatchObject({ name: "Error", message: "card is null" });
    });

    it("fails the run with StepError when the handler does not catch it", async () => {
      const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }], retries: 0 }, async ({ step }) => {
        await step.run("charge", () => {
          throw new Error("boom");
        });
        return "unreachable";
      });
      const h = harness(fn, { autoAck: true });
      await h.done;
      const detail = errorOf(h.runResult);
      expect(detail.name).toBe("StepError");
      expect(detail.message).toBe('step "charge" failed: boom');
      expect(detail.cause).toMatchObject({ name: "Error", message: "boom" });
      expect(h.runResult?.lease).toBe(LEASE);
    });
  });

  describe("an ack carrying the journaled result", () => {
    it("makes step.run return the value an earlier execution journaled", async () => {
      const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }] }, async ({ step }) => {
        const v = await step.run("pick", () => ({ winner: "mine" }));
        const again = await step.run("pick", () => ({ winner: "second" }));
        return { v, again };
      });
      const h = harness(fn);
      await h.until(() => h.stepResults.length === 1, "the step result");
      expect(outputOf(h.stepResults[0])).toEqual({ winner: "mine" });
      h.ack("pick:0", journaledOutput("pick:0", { winner: "theirs" }));
      await h.until(() => h.stepResults.length === 2, "the second step result");
      h.ack("pick:1");
      await h.done;
      expect(outputOf(h.runResult)).toEqual({ v: { winner: "theirs" }, again: { winner: "second" } });
    });

    it("makes step.run throw when the earlier execution journaled an error", async () => {
      let caught: unknown;
      const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }] }, async ({ step }) => {
        try {
          return await step.run("pick", () => "mine");
        } catch (err) {
          caught = err;
          return "caught";
        }
      });
      const h = harness(fn);
      await h.until(() => h.stepResults.length === 1, "the step result");
      h.ack("pick:0", journaledError("pick:0", { name: "RangeError", message: "earlier failure" }));
      await h.done;
      expect(caught).toBeInstanceOf(StepError);
      expect(((caught as StepError).cause as Error).message).toBe("earlier failure");
      expect(outputOf(h.runResult)).toBe("caught");
    });
  });

  describe("outputs are JSON round-tripped", () => {
    const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }] }, async ({ step }) => {
      const when = await step.run("when", () => new Date(EVENT_TS));
      const nothing = await step.run("nothing", () => undefined);
      const shaped = await step.run("shaped", () => ({ keep: 1, drop: undefined, list: [undefined, 2], nan: NaN }));
      return { when, nothing, shaped, whenType: typeof when };
    });
    const expected = {
      when: new Date(EVENT_TS).toISOString(),
      nothing: null,
      shaped: { keep: 1, list: [null, 2], nan: null },
      whenType: "string",
    };

    it("live", async () => {
      const h = harness(fn, { autoAck: true });
      await h.done;
      expect(h.stepResults.map((r) => r.result)).toEqual([
        { case: "outputJson", value: JSON.stringify(new Date(EVENT_TS)) },
        { case: "outputJson", value: "null" },
        { case: "outputJson", value: '{"keep":1,"list":[null,2],"nan":null}' },
      ]);
      expect(outputOf(h.runResult)).toEqual(expected);
    });

    it("on replay", async () => {
      const first = harness(fn, { autoAck: true });
      await first.done;
      const replay = harness(fn, { journal: first.journal() });
      await replay.done;
      expect(replay.stepResults).toHaveLength(0);
      expect(outputOf(replay.runResult)).toEqual(expected);
    });

    it("a journal entry with no result replays as null", async () => {
      const f = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }] }, async ({ step }) => ({
        v: await step.run("v", () => "live"),
      }));
      const h = harness(f, { journal: [create(JournalEntrySchema, { stepKey: "v:0" })] });
      await h.done;
      expect(outputOf(h.runResult)).toEqual({ v: null });
    });
  });

  describe("outputs that are not JSON", () => {
    it("a step returning a BigInt gives a non-retriable error result", async () => {
      let caught: unknown;
      const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }] }, async ({ step }) => {
        try {
          await step.run("big", () => 10n);
        } catch (err) {
          caught = err;
        }
      });
      const h = harness(fn, { autoAck: true });
      await h.done;
      expect(h.stepKeys).toEqual(["big:0"]);
      const detail = errorOf(h.stepResults[0]);
      expect(detail.name).toBe("NonRetriableError");
      expect(detail.nonRetriable).toBe(true);
      expect(detail.message).toContain('the output of step "big" is not JSON');
      expect(caught).toBeInstanceOf(StepError);
      expect((caught as StepError).cause).toBeInstanceOf(NonRetriableError);
    });

    it("a step output Postgres cannot store (NUL) gives a non-retriable error result; NUL in an error is replaced", async () => {
      const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }] }, async ({ step }) => {
        await step.run("nul", () => "a\u0000b").catch(() => null);
        await step.run("throws", () => {
          throw new Error("bad\u0000byte");
        }).catch(() => null);
        return "ok";
      });
      const h = harness(fn, { autoAck: true });
      await h.done;
      expect(h.stepKeys).toEqual(["nul:0", "throws:0"]);
      const first = errorOf(h.stepResults[0]);
      expect(first.nonRetriable).toBe(true);
      expect(first.message).toMatch(/NUL character or a lone surrogate/);
      expect(errorOf(h.stepResults[1]).message).toBe("bad\uFFFDbyte");
    });

    it("a step output over the size limit gives a non-retriable error result", async () => {
      const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }] }, async ({ step }) => {
        await step.run("huge", () => "x".repeat(MAX_OUTPUT_BYTES));
      });
      const h = harness(fn, { autoAck: true });
      await h.done;
      const detail = errorOf(h.stepResults[0]);
      expect(detail.nonRetriable).toBe(true);
      expect(detail.message).toContain(`${MAX_OUTPUT_BYTES + 2} bytes`);
      expect(errorOf(h.runResult).name).toBe("StepError");
    });

    it("a handler returning a BigInt fails the run as non-retriable", async () => {
      const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }] }, async () => ({ n: 1n }));
      const h = harness(fn);
      await h.done;
      const detail = errorOf(h.runResult);
      expect(detail.name).toBe("NonRetriableError");
      expect(detail.nonRetriable).toBe(true);
      expect(detail.message).toContain("the handler's return value is not JSON");
    });
  });

  describe("parallel steps", () => {
    it("sends both results before any ack, with keys in call order", async () => {
      let resolveSlow!: () => void;
      const slowGate = new Promise<void>((r) => (resolveSlow = r));
      let after = false;
      const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }] }, async ({ step }) => {
        const [slow, fast, other] = await Promise.all([
          step.run("fetch", async () => {
            await slowGate;
            return "slow";
          }),
          step.run("fetch", () => "fast"),
          step.run("other", () => "other"),
        ]);
        after = true;
        return { slow, fast, other };
      });
      const h = harness(fn);
      await h.until(() => h.stepResults.length === 2, "the two fast results");
      // The second call finished first but keeps the key of its call order.
      expect(h.stepKeys).toEqual(["fetch:1", "other:0"]);
      resolveSlow();
      await h.until(() => h.stepResults.length === 3, "all three results");
      expect(h.stepKeys).toEqual(["fetch:1", "other:0", "fetch:0"]);
      expect(Object.fromEntries(h.stepResults.map((r) => [r.stepKey, outputOf(r)]))).toEqual({
        "fetch:0": "slow",
        "fetch:1": "fast",
        "other:0": "other",
      });

      // Acks in any order; the handler waits for all of them.
      h.ack("other:0");
      h.ack("fetch:0");
      await ticks();
      expect(after).toBe(false);
      h.ack("fetch:1");
      await h.done;
      expect(outputOf(h.runResult)).toEqual({ slow: "slow", fast: "fast", other: "other" });

      // The same keys on replay give the same values in the same places.
      const replay = harness(fn, { journal: h.journal() });
      await replay.done;
      expect(replay.stepResults).toHaveLength(0);
      expect(outputOf(replay.runResult)).toEqual({ slow: "slow", fast: "fast", other: "other" });
    });
  });

  describe("abort", () => {
    it("rejects a step awaiting its ack, runs no further step and sends no run result", async () => {
      let caught: unknown;
      let caughtLater: unknown;
      let laterRan = false;
      const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }] }, async ({ step }) => {
        try {
          await step.run("a", () => 1);
        } catch (err) {
          caught = err;
        }
        try {
          await step.run("b", () => {
            laterRan = true;
          });
        } catch (err) {
          caughtLater = err;
        }
        return "finished anyway";
      });
      const h = harness(fn);
      await h.until(() => h.stepResults.length === 1, "the step result");
      h.execution.abort("cancelled by user");
      await h.done;

      expect(caught).toBeInstanceOf(RunAbortedError);
      expect((caught as Error).message).toBe("cancelled by user");
      expect(caughtLater).toBeInstanceOf(RunAbortedError);
      expect(laterRan).toBe(false);
      expect(h.stepKeys).toEqual(["a:0"]);
      expect(h.runResults).toHaveLength(0);

      // A late ack and a second abort are harmless.
      h.ack("a:0");
      h.execution.abort("again");
      await ticks();
      expect(h.sent).toHaveLength(1);
    });

    it("drops the result of a step that was still running", async () => {
      let release!: () => void;
      const gate = new Promise<void>((r) => (release = r));
      let started = false;
      const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }] }, async ({ step }) => {
        await step.run("slow", async () => {
          started = true;
          await gate;
          return "done";
        });
      });
      const h = harness(fn);
      await h.until(() => started, "the step to start");
      h.execution.abort("worker draining");
      release();
      await h.done;
      expect(h.sent).toHaveLength(0);
    });

    it("sends no run result when the handler throws after an abort", async () => {
      const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }] }, async ({ step }) => {
        await step.run("a", () => 1);
      });
      const h = harness(fn);
      await h.until(() => h.stepResults.length === 1, "the step result");
      h.execution.abort("stream dropped");
      await h.done;
      expect(h.runResults).toHaveLength(0);
    });
  });

  describe("the end of a run", () => {
    it("a handler that returns sends runResult with its output", async () => {
      const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }] }, async ({ event, runId }) => ({
        runId,
        id: event.id,
        name: event.name,
        ts: event.ts.toISOString(),
        data: event.data,
      }));
      const h = harness(fn, { event: { name: "e", data: { k: "v" } } });
      await h.done;
      expect(h.sent).toHaveLength(1);
      const rr = h.runResult!;
      expect(rr.runId).toBe(RUN_ID);
      expect(rr.lease).toBe(LEASE);
      expect(outputOf(rr)).toEqual({
        runId: RUN_ID,
        id: "ev-1",
        name: "e",
        ts: new Date(EVENT_TS).toISOString(),
        data: { k: "v" },
      });
    });

    it("a handler that returns nothing sends null", async () => {
      const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }] }, () => undefined);
      const h = harness(fn);
      await h.done;
      expect(h.runResult?.result).toEqual({ case: "outputJson", value: "null" });
    });

    it("a handler that throws sends runResult with the error", async () => {
      const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }] }, async () => {
        throw new RangeError("quantity out of range", { cause: new Error("qty=-1") });
      });
      const h = harness(fn);
      await h.done;
      expect(h.runResults).toHaveLength(1);
      expect(h.runResult?.runId).toBe(RUN_ID);
      expect(h.runResult?.lease).toBe(LEASE);
      const detail = errorOf(h.runResult);
      expect(detail.name).toBe("RangeError");
      expect(detail.message).toBe("quantity out of range");
      expect(detail.nonRetriable).toBe(false);
      expect(detail.stack).toContain("quantity out of range");
      expect(detail.cause).toMatchObject({ name: "Error", message: "qty=-1" });
    });

    it("a handler that throws NonRetriableError marks the run error non-retriable", async () => {
      const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }] }, async () => {
        throw new NonRetriableError("bad order");
      });
      const h = harness(fn);
      await h.done;
      expect(errorOf(h.runResult)).toMatchObject({ name: "NonRetriableError", message: "bad order", nonRetriable: true });
    });

    it("a handler that throws a string sends it as the message", async () => {
      const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }] }, async () => {
        throw "plain string";
      });
      const h = harness(fn);
      await h.done;
      expect(errorOf(h.runResult)).toMatchObject({ name: "Error", message: "plain string" });
    });
  });

  describe("typed events", () => {
    const typed = new Stepwise({ appId: "t", schemas: { e: z.object({ n: z.number() }) } });

    it("an event failing its schema ends the run with a NonRetriableError and runs no step", async () => {
      let handlerRan = false;
      let stepRan = false;
      const fn = typed.createFunction({ id: "f", triggers: [{ event: "e" }] }, async ({ event, step }) => {
        handlerRan = true;
        return step.run("double", () => {
          stepRan = true;
          return event.data.n * 2;
        });
      });
      const h = harness(fn, { event: { name: "e", data: { n: "not a number" } } });
      await h.done;
      expect(handlerRan).toBe(false);
      expect(stepRan).toBe(false);
      expect(h.stepResults).toHaveLength(0);
      expect(h.runResults).toHaveLength(1);
      const detail = errorOf(h.runResult);
      expect(detail.name).toBe("NonRetriableError");
      expect(detail.nonRetriable).toBe(true);
      expect(detail.message).toContain("ev-1");
      expect(detail.message).toContain("does not match its schema");
      expect(detail.message).toContain("n:");
    });

    it("an event matching its schema reaches the handler parsed", async () => {
      const fn = typed.createFunction({ id: "f", triggers: [{ event: "e" }] }, async ({ event, step }) =>
        step.run("double", () => event.data.n * 2),
      );
      const h = harness(fn, { autoAck: true, event: { name: "e", data: { n: 21, extra: true } } });
      await h.done;
      expect(outputOf(h.runResult)).toBe(42);
    });
  });

  describe("the events of a run", () => {
    const typed = new Stepwise({ appId: "t", schemas: { e: z.object({ n: z.coerce.number() }) } });

    it("a run of one event gets [event]", async () => {
      let seen: unknown;
      const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }] }, ({ event, events }) => {
        seen = events;
        return events[0] === event;
      });
      const h = harness(fn, { event: { name: "e", data: { n: 1 } } });
      await h.done;
      expect(outputOf(h.runResult)).toBe(true);
      expect(seen).toEqual([{ id: "ev-1", name: "e", data: { n: 1 }, ts: new Date(EVENT_TS) }]);
    });

    it("a debounced or batched run gets every event in order, each parsed by its schema, `event` among them", async () => {
      const fn = typed.createFunction({ id: "f", triggers: [{ event: "e" }] }, ({ event, events }) => ({
        ids: events.map((e) => e.id),
        sum: events.reduce((n, e) => n + e.data.n, 0),
        same: events.includes(event),
      }));
      const h = harness(fn, {
        event: { name: "e", data: { n: "2" } },
        events: [
          { id: "ev-0", name: "e", data: { n: "1" } },
          { id: "ev-1", name: "e", data: { n: "2" } },
          { id: "ev-2", name: "e", data: { n: "3" } },
        ],
      });
      await h.done;
      expect(outputOf(h.runResult)).toEqual({ ids: ["ev-0", "ev-1", "ev-2"], sum: 6, same: true });
    });
  });
});
