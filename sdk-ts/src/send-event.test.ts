import { describe, expect, it } from "vitest";
import type { StepwiseFunction } from "./function.js";
import { Stepwise } from "./client.js";
import { StepwiseError } from "./stepwise-error.js";
import { errorOf, Harness, HARNESS_RUN_ID, journaledOutput, outputOf } from "./testing/run-execution-harness.js";

// step.sendEvent in the SDK alone: the ids it derives, what it journals, and
// a replay that does not send again.

/** A function whose one step sends two events, with the client's send replaced. */
function sender(sent: Array<Array<{ id: string; name: string }>>, fail?: StepwiseError): StepwiseFunction {
  const stepwise = new Stepwise({ appId: "t" });
  const fn = stepwise.createFunction({ id: "f", triggers: [{ event: "e" }] }, async ({ step }) =>
    step.sendEvent("notify", [{ name: "a", data: {} }, { id: "mine", name: "b", data: {} }]),
  );
  return {
    ...fn,
    sendEvents: async (events) => {
      if (fail) throw fail;
      sent.push(events.map((e) => ({ id: e.id, name: e.name })));
      return events.map((e) => e.id);
    },
  };
}

describe("step.sendEvent", () => {
  it("derives the same ids from the run and the step key on every attempt, keeps an id given, and journals the ids", async () => {
    const sent: Array<Array<{ id: string; name: string }>> = [];
    const runs = [new Harness(sender(sent), { lease: 1, autoAck: true }), new Harness(sender(sent), { lease: 2, autoAck: true })];
    for (const h of runs) await h.until(() => h.stepResults.length === 1, "the step result");
    expect(sent).toHaveLength(2);
    expect(sent[0]).toEqual(sent[1]);
    expect(sent[0]![0]!.id).toMatch(new RegExp(`^${HARNESS_RUN_ID}-[0-9a-f]{16}-0$`));
    expect(sent[0]![1]!.id).toBe("mine");
    expect(runs[0]!.stepResults[0]!.stepKey).toBe("notify:0");
    expect(outputOf(runs[0]!.stepResults[0])).toEqual(sent[0]!.map((e) => e.id));
  });

  it("returns the journaled ids on a replay without sending", async () => {
    const sent: Array<Array<{ id: string; name: string }>> = [];
    const h = new Harness(sender(sent), { lease: 3, journal: [journaledOutput("notify:0", ["x", "y"])] });
    await h.until(() => h.runResult !== undefined, "the run result");
    expect(sent).toEqual([]);
    expect(outputOf(h.runResult)).toEqual(["x", "y"]);
  });

  it("fails the step without retries when the engine refuses the events", async () => {
    const h = new Harness(sender([], new StepwiseError("events[0].name: must not be empty", "invalid_argument")), { lease: 1, autoAck: true });
    await h.until(() => h.stepResults.length === 1, "the step result");
    const r = h.stepResults[0]!;
    expect(r.retryAt).toBeUndefined();
    expect(errorOf(r)).toMatchObject({ name: "NonRetriableError", message: "events[0].name: must not be empty", nonRetriable: true });
  });
});
