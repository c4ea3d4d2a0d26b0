import { timestampMs } from "@bufbuild/protobuf/wkt";
import { MAX_EVENT_DATA_BYTES, type Await } from "@stepwise/proto";
import { describe, expect, expectTypeOf, it } from "vitest";
import { Stepwise } from "./client.js";
import { StepError } from "./errors.js";
import type { StepwiseFunction } from "./function.js";
import { Harness, type HarnessOptions, journaledError, journaledOutput, outputOf } from "./testing/run-execution-harness.js";

// step.invoke in a RunExecution, on the fake stream of the harness: a new
// invoke parks its branch and the run suspends with an Await of kind
// invoke; a journaled one returns the invoked run's output, or throws the
// StepError of its journaled error, as any journaled step.

const LEASE = 2;
const HOUR = 3_600_000;
const stepwise = new Stepwise({ appId: "shop" });
const charge = stepwise.createFunction({ id: "charge", triggers: [{ event: "charge.requested" }] }, async () => ({ receipt: "r-1", cents: 100 }));

function harness(fn: StepwiseFunction, opts: Omit<HarnessOptions, "lease"> = {}): Harness {
  return new Harness(fn, { ...opts, lease: LEASE });
}

/** The invoke awaits of the single Suspend sent, as plain data. */
function invokes(h: Harness): Array<{ key: string; id: string; app: string; fn: string; data: unknown; timeoutMs: number | undefined }> {
  expect(h.suspends).toHaveLength(1);
  return h.suspends[0]!.awaits.map((a: Await) => {
    if (a.kind.case !== "invoke") throw new Error(`expected an invoke, got ${a.kind.case}`);
    const v = a.kind.value;
    return {
      key: a.stepKey,
      id: a.stepId,
      app: v.appId,
      fn: v.functionId,
      data: JSON.parse(v.dataJson),
      timeoutMs: v.timeoutAt ? timestampMs(v.timeoutAt) : undefined,
    };
  });
}

describe("step.invoke", () => {
  it("suspends with an invoke await: the function object's app and id, the data, the timeout from now", async () => {
    let after = false;
    const fn = stepwise.createFunction({ id: "order", triggers: [{ event: "e" }] }, async ({ step }) => {
      await step.invoke("pay", { function: charge, data: { orderId: "o-1" }, timeout: "1h" });
      after = true;
    });
    const before = Date.now();
    const h = harness(fn);
    await h.done;
    expect(h.kinds).toEqual(["suspend"]);
    const [pay] = invokes(h);
    expect(pay).toMatchObject({ key: "pay:0", id: "pay", app: "shop", fn: "charge", data: { orderId: "o-1" } });
    expect(pay!.timeoutMs).toBeGreaterThanOrEqual(before + HOUR);
    expect(pay!.timeoutMs).toBeLessThanOrEqual(Date.now() + HOUR);
    expect(after).toBe(false);
  });

  it("names a function by id in this app or by app/id, with {} and no timeout by default; parallel invokes suspend together", async () => {
    const fn = stepwise.createFunction({ id: "order", triggers: [{ event: "e" }] }, async ({ step }) => {
      await Promise.all([step.invoke("a", { function: "charge" }), step.invoke("b", { function: "billing/invoice", data: { n: 1 } })]);
    });
    const h = harness(fn);
    await h.done;
    expect(invokes(h)).toEqual([
      { key: "a:0", id: "a", app: "shop", fn: "charge", data: {}, timeoutMs: undefined },
      { key: "b:0", id: "b", app: "billing", fn: "invoice", data: { n: 1 }, timeoutMs: undefined },
    ]);
  });

  it("a journaled invoke returns the invoked run's output, typed from the function, and sends nothing for it", async () => {
    const fn = stepwise.createFunction({ id: "order", triggers: [{ event: "e" }] }, async ({ step }) => {
      const paid = await step.invoke("pay", { function: charge });
      expectTypeOf(paid).toEqualTypeOf<{ receipt: string; cents: number }>();
      const untyped = await step.invoke("other", { function: "billing/invoice" });
      expectTypeOf(untyped).toBeUnknown();
      return { receipt: paid.receipt, untyped };
    });
    const h = harness(fn, { journal: [journaledOutput("pay:0", { receipt: "r-9", cents: 5 }), journaledOutput("other:0", [1, 2])] });
    await h.done;
    expect(h.kinds).toEqual(["runResult"]);
    expect(outputOf(h.runResult)).toEqual({ receipt: "r-9", untyped: [1, 2] });
  });

  it("a journaled failure throws a StepError whose cause is the journaled error, which the handler can catch", async () => {
    let caught: unknown;
    const fn = stepwise.createFunction({ id: "order", triggers: [{ event: "e" }] }, async ({ step }) => {
      try {
        await step.invoke("pay", { function: charge });
      } catch (err) {
        caught = err;
        return "declined";
      }
      return "paid";
    });
    const failed = { name: "InvokedRunFailed", message: "run r-2 of shop/charge failed: card declined", nonRetriable: true };
    const h = harness(fn, { journal: [journaledError("pay:0", failed)] });
    await h.done;
    expect(caught).toBeInstanceOf(StepError);
    expect((caught as StepError).message).toBe('step "pay" failed: run r-2 of shop/charge failed: card declined');
    expect(((caught as StepError).cause as Error).name).toBe("InvokedRunFailed");
    expect(outputOf(h.runResult)).toBe("declined");
  });

  it("bad arguments throw a NonRetriableError naming the step and the field, and send nothing for it", async () => {
    const caught: Error[] = [];
    const fn = stepwise.createFunction({ id: "order", triggers: [{ event: "e" }] }, async ({ step }) => {
      const calls: Array<() => Promise<unknown>> = [
        () => step.invoke("i", undefined as never),
        () => step.invoke("i", { function: "" }),
        () => step.invoke("i", { function: "a/b/c" }),
        () => step.invoke("i", { function: "bad id" }),
        () => step.invoke("i", { function: {} as never }),
        () => step.invoke("i", { function: charge, data: [1] as never }),
        () => step.invoke("i", { function: charge, data: { big: "x".repeat(MAX_EVENT_DATA_BYTES) } }),
        () => step.invoke("i", { function: charge, timeout: "eventually" }),
        () => step.invoke("", { function: charge }),
      ];
      for (const call of calls) {
        try {
          await call();
        } catch (err) {
          caught.push(err as Error);
        }
      }
      return "handled";
    });
    const h = harness(fn);
    await h.done;
    expect(h.kinds).toEqual(["runResult"]);
    const fnMessage =
      'step.invoke "i": function must be a function made by createFunction, "function-id" or "app-id/function-id" (ids of 1-128 letters, digits, "-" or "_")';
    expect(caught.map((e) => [e.name, e.message])).toEqual([
      ["NonRetriableError", 'step.invoke "i": options must be { function, data?, timeout? }'],
      ["NonRetriableError", fnMessage],
      ["NonRetriableError", fnMessage],
      ["NonRetriableError", fnMessage],
      ["NonRetriableError", fnMessage],
      ["NonRetriableError", 'step.invoke "i": data must be a JSON object'],
      ["NonRetriableError", `step.invoke "i": data is ${MAX_EVENT_DATA_BYTES + 10} bytes of JSON, more than the ${MAX_EVENT_DATA_BYTES} allowed`],
      ["NonRetriableError", 'step.invoke "i": timeout: "eventually" is not a duration (such as "500ms", "15s", "10m", "2h", "7d" or "1h30m")'],
      ["NonRetriableError", "step.invoke needs a non-empty id"],
    ]);
  });
});
