import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StepError, Stepwise, StepwiseError, Worker, type RunInfo, type StepwiseFunction } from "@stepwise/sdk";
import { Stack, eventually } from "./support/stack.js";

const noop = async () => null;

// Bad input in a function's config is rejected where it is first seen, with
// an error that names the function and the field: durations and retries by
// the SDK at createFunction, CEL conditions and cron schedules by the
// executor when the worker registers (INVALID_ARGUMENT). Nothing of a
// refused registration is stored, and the executor stays up.
describe("bad function configs", () => {
  const stack = new Stack();
  const workers: Worker[] = [];

  beforeAll(async () => {
    await stack.start();
  });

  afterAll(async () => {
    for (const w of workers) await w.close();
    await stack.stop();
  });

  describe("createFunction rejects with a TypeError naming the function and the field", () => {
    const client = new Stepwise({ appId: "sdk-checks", url: "http://127.0.0.1:1" });
    const cases: Array<[string, Record<string, unknown>, RegExp]> = [
      ["retries above 20", { retries: 21 }, /^function f-x: retries: must be an integer from 0 to 20$/],
      ["negative retries", { retries: -1 }, /^function f-x: retries: must be an integer/],
      ["fractional retries", { retries: 1.5 }, /^function f-x: retries: must be an integer/],
      ["a backoff.base that is not a duration", { backoff: { base: "5 parsecs" } }, /^function f-x: backoff\.base: "5 parsecs" is not a duration/],
      ["a backoff.cap over a year", { backoff: { cap: "400d" } }, /^function f-x: backoff\.cap: "400d" must be between 0 and one year$/],
      ["a negative backoff.base", { backoff: { base: -5 } }, /^function f-x: backoff\.base: -5 must be between 0 and one year$/],
      ["a backoff.cap shorter than the base", { backoff: { base: "10s", cap: "1s" } }, /^function f-x: backoff\.cap: must not be shorter than backoff\.base$/],
      ["a backoff.factor below 1", { backoff: { factor: 0.5 } }, /^function f-x: backoff\.factor: must be a number from 1 to 10$/],
      ["no trigger", { triggers: [] }, /^function f-x: triggers: at least one trigger is required$/],
      ["an empty trigger condition", { triggers: [{ event: "a" }, { event: "b", if: " " }] }, /^function f-x: triggers\[1\]\.if: must be a CEL expression$/],
      ["an empty cron", { triggers: [{ cron: "" }] }, /^function f-x: triggers\[0\]\.cron: must be a cron schedule$/],
      ["a trigger with event and cron", { triggers: [{ event: "a", cron: "* * * * *" }] }, /^function f-x: triggers\[0\]: has both event and cron$/],
    ];
    for (const [what, patch, message] of cases) {
      it(what, () => {
        const config = { id: "f-x", triggers: [{ event: "a" }], ...patch } as Parameters<typeof client.createFunction>[0];
        let thrown: unknown;
        try {
          client.createFunction(config, noop);
        } catch (err) {
          thrown = err;
        }
        expect(thrown).toBeInstanceOf(TypeError);
        expect((thrown as Error).message).toMatch(message);
      });
    }

    it("a bad function id", () => {
      expect(() => client.createFunction({ id: "has space", triggers: [{ event: "a" }] }, noop)).toThrow(
        new TypeError('function id "has space" must be 1-128 letters, digits, "-" or "_"'),
      );
    });
  });

  describe("the executor refuses the registration with INVALID_ARGUMENT naming the function and the field", () => {
    const client = new Stepwise({ appId: "reg-bad", url: "http://127.0.0.1:1" });
    const good = client.createFunction({ id: "fine", triggers: [{ event: "fine" }] }, noop);
    const cases: Array<[string, StepwiseFunction, RegExp]> = [
      [
        "a trigger condition that does not parse",
        client.createFunction({ id: "bad-cel", triggers: [{ event: "order", if: "event.data.total >" }] }, noop),
        /^function "bad-cel": triggers\[0\]\.condition: invalid CEL expression: .+/,
      ],
      [
        "a trigger condition with a variable other than event",
        client.createFunction({ id: "bad-var", triggers: [{ event: "order", if: "async.data.total > 1" }] }, noop),
        /^function "bad-var": triggers\[0\]\.condition: invalid CEL expression: unknown variable "async"/,
      ],
      [
        "a bad condition in the second trigger",
        client.createFunction({ id: "second", triggers: [{ event: "a" }, { event: "b", if: "event.data.x == (" }] }, noop),
        /^function "second": triggers\[1\]\.condition: invalid CEL expression: /,
      ],
      [
        "a cron field out of range",
        client.createFunction({ id: "bad-cron", triggers: [{ cron: "61 * * * *" }] }, noop),
        /^function "bad-cron": triggers\[0\]\.cron: invalid cron schedule "61 \* \* \* \*": .*minute/,
      ],
      [
        "a cron with seven fields",
        client.createFunction({ id: "seven", triggers: [{ event: "x" }, { cron: "* * * * * * *" }] }, noop),
        /^function "seven": triggers\[1\]\.cron: invalid cron schedule "\* \* \* \* \* \* \*": /,
      ],
      [
        "an unknown time zone",
        client.createFunction({ id: "bad-tz", triggers: [{ cron: "0 * * * *", timezone: "Mars/Olympus" }] }, noop),
        /^function "bad-tz": triggers\[0\]\.cron: invalid cron schedule "0 \* \* \* \*" in "Mars\/Olympus": /,
      ],
      [
        "a cron schedule that never fires (February 30th)",
        client.createFunction({ id: "never", triggers: [{ cron: "0 0 30 2 *" }] }, noop),
        /^function "never": triggers\[0\]\.cron: "0 0 30 2 \*" never fires$/,
      ],
    ];

    for (const [what, bad, message] of cases) {
      it(what, async () => {
        // A good function next to the bad one: the registration is all or nothing.
        const worker = new Worker({ url: stack.executorUrl, functions: [good, bad], handleSignals: false, maxReconnectDelayMs: 200 });
        const err = await worker.connect().then(
          () => undefined,
          (e: unknown) => e,
        );
        workers.push(worker);
        expect(err).toBeInstanceOf(StepwiseError);
        expect((err as StepwiseError).code).toBe("invalid_argument");
        expect((err as StepwiseError).message).toMatch(message);
        expect(await stack.query("SELECT function_id FROM functions WHERE app_id = 'reg-bad'")).toEqual([]);
        expect(await stack.query("SELECT function_id FROM cron_schedules WHERE app_id = 'reg-bad'")).toEqual([]);
        expect(stack.procs.get("executor")?.exitCode).toBeNull();
      });
    }

    it("the executor stays up: a good worker registers afterwards and its run completes", async () => {
      const ok = new Stepwise({ appId: "reg-good", url: stack.ingestUrl });
      const fn = ok.createFunction({ id: "after-bad", triggers: [{ event: "after.bad" }] }, async ({ step }) => step.run("s", () => "served"));
      const worker = new Worker({ url: stack.executorUrl, functions: [fn], handleSignals: false });
      workers.push(worker);
      await worker.connect();
      const [id] = await ok.send({ name: "after.bad", data: {} });
      const run = await eventually(async () => {
        const [r] = await ok.listRunsOfEvent(id!);
        return r?.status === "COMPLETED" ? r : undefined;
      }, 15_000, "the run to complete");
      expect(run.output).toBe("served");
      expect(stack.procs.get("executor")?.exitCode).toBeNull();
      expect(await stack.query("SELECT function_id FROM functions WHERE app_id = 'reg-bad'")).toEqual([]);
    });
  });

  describe("conditions at run time", () => {
    let client: Stepwise;
    const bigRuns: string[] = [];

    beforeAll(async () => {
      client = new Stepwise({ appId: "conditions", url: stack.ingestUrl });
      const big = client.createFunction({ id: "big-orders", triggers: [{ event: "order", if: "event.data.total > 100" }] }, async ({ event, step }) =>
        step.run("note", () => {
          bigRuns.push(event.id);
          return event.data["total"] as number;
        }),
      );
      const either = client.createFunction(
        { id: "vip-or-huge", triggers: [{ event: "order", if: "event.data.total > 1000" }, { event: "order", if: "event.data.vip == true" }] },
        async ({ event }) => event.id,
      );
      const badWait = client.createFunction({ id: "bad-wait", triggers: [{ event: "bad.wait" }], retries: 3 }, async ({ event, step }) => {
        let caught: unknown = null;
        try {
          await step.waitForEvent("reply", { event: "reply", timeout: "10s", if: String(event.data["if"]) });
        } catch (err) {
          if (!(err instanceof StepError) || event.data["rethrow"] === true) throw err;
          caught = { name: err.name, stepId: err.stepId, message: err.message, cause: (err.cause as Error).name };
        }
        const next = await step.run("next", () => "continued");
        return { caught, next };
      });
      const badSleep = client.createFunction({ id: "bad-sleep", triggers: [{ event: "bad.sleep" }], retries: 3 }, async ({ step }) => {
        await step.run("first", () => 1);
        await step.sleep("nap", "forever");
        return "unreachable";
      });
      const worker = new Worker({ url: stack.executorUrl, functions: [big, either, badWait, badSleep], handleSignals: false });
      workers.push(worker);
      await worker.connect();
    });

    async function finished(eventId: string): Promise<RunInfo> {
      return eventually(async () => {
        const [r] = await client.listRunsOfEvent(eventId);
        if (!r || (r.status !== "COMPLETED" && r.status !== "FAILED")) return undefined;
        return client.getRun(r.id);
      }, 20_000, `the run of ${eventId} to finish`);
    }

    it("a trigger's if starts runs only for the events it accepts", async () => {
      const sent = await client.send([
        { id: "o-150", name: "order", data: { total: 150 } },
        { id: "o-50", name: "order", data: { total: 50 } },
        { id: "o-none", name: "order", data: {} },
        { id: "o-text", name: "order", data: { total: "lots" } },
        { id: "o-2000", name: "order", data: { total: 2000 } },
        { id: "o-vip", name: "order", data: { total: 5, vip: true } },
      ]);
      expect(sent).toEqual(["o-150", "o-50", "o-none", "o-text", "o-2000", "o-vip"]);
      await eventually(async () => ((await stack.eventsSettled()) ? true : undefined), 15_000, "every event to be handled");
      const runs = await eventually(async () => {
        const rows = await stack.query<{ event_id: string; function_id: string; status: string }>(
          "SELECT event_id, function_id, status FROM runs WHERE app_id = 'conditions' AND event_id LIKE 'o-%' ORDER BY function_id, event_id",
        );
        return rows.every((r) => r.status === "COMPLETED") ? rows : undefined;
      }, 15_000, "the runs to complete");
      expect(runs.map((r) => [r.function_id, r.event_id])).toEqual([
        ["big-orders", "o-150"],
        ["big-orders", "o-2000"],
        ["vip-or-huge", "o-2000"],
        ["vip-or-huge", "o-vip"],
      ]);
      expect(bigRuns.sort()).toEqual(["o-150", "o-2000"]);
      // The events that started nothing are stored all the same.
      const stored = await stack.query<{ id: string }>("SELECT id FROM events WHERE id = ANY($1) ORDER BY id", [sent]);
      expect(stored).toHaveLength(6);
    });

    it("a waitForEvent with an invalid if fails its step for good with a StepError the handler catches; the run goes on", async () => {
      const [id] = await client.send({ name: "bad.wait", data: { if: "async.data.x ==" } });
      const run = await finished(id!);
      expect(run.status).toBe("COMPLETED");
      const out = run.output as { caught: { name: string; stepId: string; message: string; cause: string }; next: string };
      expect(out.next).toBe("continued");
      expect(out.caught).toMatchObject({ name: "StepError", stepId: "reply", cause: "InvalidConditionError" });
      expect(out.caught.message).toMatch(/^step "reply" failed: step "reply": if: invalid CEL expression: /);
      expect(run.steps.map((s) => [s.key, s.attempt])).toEqual([
        ["reply:0", 1],
        ["next:0", 1],
      ]);
      expect(run.steps[0]!.error).toMatchObject({ name: "InvalidConditionError", nonRetriable: true });
      expect(run.failedAttempts).toEqual([]);
      expect(await stack.query("SELECT 1 FROM waits WHERE run_id = $1", [run.id])).toEqual([]);
      expect(await stack.query("SELECT 1 FROM timers WHERE run_id = $1", [run.id])).toEqual([]);
    });

    it("uncaught, the invalid wait fails the run at once, without retries", async () => {
      const [id] = await client.send({ name: "bad.wait", data: { if: "nobody.knows == 1", rethrow: true } });
      const run = await finished(id!);
      expect(run.status).toBe("FAILED");
      expect(run.error?.name).toBe("StepError");
      expect(run.error?.message).toMatch(/step "reply": if: invalid CEL expression: unknown variable "nobody"/);
      expect(run.failedAttempts).toEqual([]);
      expect(run.steps.map((s) => s.key)).toEqual(["reply:0"]);
    });

    it("an invalid sleep duration fails the run at once with an error naming the step and the field", async () => {
      const [id] = await client.send({ name: "bad.sleep", data: {} });
      const run = await finished(id!);
      expect(run.status).toBe("FAILED");
      expect(run.error?.name).toBe("NonRetriableError");
      expect(run.error?.message).toMatch(/^step\.sleep "nap": duration: "forever" is not a duration/);
      expect(run.failedAttempts).toEqual([]);
      expect(run.steps.map((s) => s.key)).toEqual(["first:0"]);
    });
  });
});
