import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { NonRetriableError, StepError, Stepwise, Worker, type RunInfo } from "@stepwise/sdk";
import { eventually, gate, runOfEventIn, Stack } from "./support/stack.js";

// step.invoke on the real stack: ingest, scheduler and executor as separate
// processes, real NATS JetStream and Postgres, and one worker with a single
// slot, which the invoking run must give up while it waits for the run it
// invoked (or neither could ever run).
describe("step.invoke", () => {
  const stack = new Stack();
  let client: Stepwise;
  let worker: Worker;
  let childRelease = gate();
  let childStarted = gate();

  /** What a handler reports of an error it caught. */
  function caught(err: unknown) {
    if (!(err instanceof StepError)) throw err;
    const cause = err.cause as Error;
    return { name: err.name, message: err.message, causeName: cause.name, nonRetriable: cause instanceof NonRetriableError };
  }

  async function send(name: string, data: Record<string, unknown> = {}): Promise<string> {
    const [id] = await client.send({ name, data });
    return id!;
  }

  /** The run an event started, once it ended. */
  async function ended(eventId: string): Promise<RunInfo> {
    const { runs, done } = await client.waitForRuns(eventId, { timeoutMs: 30_000 });
    expect(done).toBe(true);
    expect(runs).toHaveLength(1);
    return client.getRun(runs[0]!.id);
  }

  /** The run an event started, once it is in `status`. */
  /** The one run an event started, once it is in `status`. */
  const runIn = (eventId: string, status: RunInfo["status"], timeoutMs?: number) => runOfEventIn(client, eventId, status, timeoutMs);

  /** The runs a run invoked, once there are `n`. */
  async function childrenOf(runId: string, n = 1): Promise<string[]> {
    return eventually(
      async () => {
        const rows = await stack.query<{ child_run_id: string }>("SELECT child_run_id FROM invocations WHERE parent_run_id = $1", [runId]);
        return rows.length === n ? rows.map((r) => r.child_run_id) : undefined;
      },
      20_000,
      `${n} runs invoked by ${runId}`,
    );
  }

  async function statusOf(runId: string, status: RunInfo["status"]): Promise<RunInfo> {
    return eventually(
      async () => {
        const run = await client.getRun(runId);
        return run.status === status ? run : undefined;
      },
      20_000,
      `run ${runId} to be ${status}`,
    );
  }

  beforeAll(async () => {
    await stack.start();
    client = new Stepwise({ appId: "invoke", url: stack.ingestUrl });
    const double = client.createFunction({ id: "double", triggers: [{ event: "double.requested" }] }, async ({ event, step }) => {
      const n = await step.run("read", () => Number(event.data["n"]));
      return { doubled: n * 2, eventName: event.name };
    });
    const failing = client.createFunction({ id: "failing", triggers: [{ event: "never.sent" }], retries: 0 }, async () => {
      throw new Error("card declined");
    });
    const gated = client.createFunction({ id: "gated", triggers: [{ event: "never.sent" }] }, async ({ step }) => {
      await step.run("work", async () => {
        childStarted.open();
        await childRelease.promise;
      });
      return "released";
    });
    const waiting = client.createFunction({ id: "waiting", triggers: [{ event: "never.sent" }] }, async ({ step }) => {
      await step.waitForEvent("never", { event: "never.sent", timeout: "1h" });
      return "resolved";
    });
    const middle = client.createFunction({ id: "middle", triggers: [{ event: "never.sent" }] }, async ({ step }) => {
      return step.invoke("inner", { function: waiting });
    });
    const parent = client.createFunction({ id: "parent", triggers: [{ event: "invoke.start" }] }, async ({ event, step }) => {
      const target = String(event.data["target"]);
      const timeout = event.data["timeout"] as string | undefined;
      try {
        const output = await step.invoke("child", { function: target, data: { n: 21 }, ...(timeout ? { timeout } : {}) });
        return { output };
      } catch (err) {
        return { error: caught(err) };
      }
    });
    const typed = client.createFunction({ id: "typed", triggers: [{ event: "invoke.typed" }] }, async ({ step }) => {
      const result = await step.invoke("double", { function: double, data: { n: 4 } });
      return result.doubled + 1;
    });
    const strict = client.createFunction({ id: "strict", triggers: [{ event: "invoke.missing" }] }, async ({ step }) => {
      await step.invoke("missing", { function: "nowhere/nothing" });
      return "unreachable";
    });
    worker = new Worker({
      url: stack.executorUrl,
      functions: [double, failing, gated, waiting, middle, parent, typed, strict],
      capacity: 1,
      handleSignals: false,
    });
    await worker.connect();
  }, 60_000);

  afterAll(async () => {
    await worker?.close();
    client?.close();
    await stack.stop();
  });

  it("returns the invoked run's output as the step's journaled result, typed from the function", async () => {
    const parent = await ended(await send("invoke.start", { target: "double" }));
    expect(parent.status).toBe("COMPLETED");
    expect(parent.output).toEqual({ output: { doubled: 42, eventName: "stepwise/function.invoked" } });
    expect(parent.steps.map((s) => [s.key, s.output])).toEqual([["child:0", { doubled: 42, eventName: "stepwise/function.invoked" }]]);
    const [childId] = await childrenOf(parent.id);
    const child = await client.getRun(childId!);
    expect(child).toMatchObject({ functionId: "double", status: "COMPLETED" });
    expect(child.event).toMatchObject({ name: "stepwise/function.invoked", data: { n: 21 } });

    const typed = await ended(await send("invoke.typed"));
    expect(typed.output).toBe(9);
  });

  it("the invoked run's failure reaches the handler as a StepError it can catch", async () => {
    const parent = await ended(await send("invoke.start", { target: "failing" }));
    const [childId] = await childrenOf(parent.id);
    expect((await client.getRun(childId!)).status).toBe("FAILED");
    expect(parent.status).toBe("COMPLETED");
    expect(parent.output).toEqual({
      error: {
        name: "StepError",
        message: `step "child" failed: run ${childId} of invoke/failing failed: card declined`,
        causeName: "InvokedRunFailed",
        nonRetriable: true,
      },
    });
    expect(parent.steps[0]?.error?.cause).toMatchObject({ name: "Error", message: "card declined" });
  });

  it("at the timeout the handler gets a StepError while the invoked run keeps going", async () => {
    const parent = await ended(await send("invoke.start", { target: "waiting", timeout: "1s" }));
    expect(parent.output).toMatchObject({ error: { name: "StepError", causeName: "InvokeTimeout", nonRetriable: true } });
    const [childId] = await childrenOf(parent.id);
    expect(((parent.output as { error: { message: string } }).error.message)).toContain(`the invoked run ${childId} of invoke/waiting did not end`);
    // The invoked run did not end: it still waits for its event.
    expect((await client.getRun(childId!)).status).toBe("WAITING");
    await client.cancelRun(childId!);
  });

  it("invoking a function that is not registered fails the step for good at the first attempt", async () => {
    const run = await ended(await send("invoke.missing"));
    // The step's one attempt is journaled as failed for good: the run resumes
    // once (its second execution), the handler gets the StepError, and the
    // run fails without a retry.
    expect(run.status).toBe("FAILED");
    expect(run.failedAttempts).toEqual([]);
    expect(run.steps.map((s) => [s.key, s.attempt, s.error?.name, s.error?.message, s.error?.nonRetriable])).toEqual([
      ["missing:0", 1, "FunctionNotFound", "step.invoke: function nowhere/nothing is not registered", true],
    ]);
    expect(run.error).toMatchObject({ name: "StepError", message: 'step "missing" failed: step.invoke: function nowhere/nothing is not registered' });
    expect(run.attempts).toBe(2);
    expect(await stack.query("SELECT child_run_id FROM invocations WHERE parent_run_id = $1", [run.id])).toEqual([]);
  });

  it("the invoking run holds no slot while it waits: on a one-slot worker the invoked run runs meanwhile", async () => {
    childStarted = gate();
    childRelease = gate();
    const eventId = await send("invoke.start", { target: "gated" });
    await childStarted.promise;
    const waiting = await runIn(eventId, "WAITING");
    const [childId] = await childrenOf(waiting.id);
    expect((await client.getRun(childId!)).status).toBe("RUNNING");
    childRelease.open();
    const parent = await ended(eventId);
    expect(parent.output).toEqual({ output: "released" });
  });

  it("cancelling the invoking run cancels the runs it invoked, recursively, each with its own stepwise/run.cancelled", async () => {
    const eventId = await send("invoke.start", { target: "middle" });
    const parent = await runIn(eventId, "WAITING");
    const [middleId] = await childrenOf(parent.id);
    await statusOf(middleId!, "WAITING");
    const [innerId] = await childrenOf(middleId!);
    await statusOf(innerId!, "WAITING");

    const cancelled = await client.cancelRun(parent.id, { reason: "order withdrawn" });
    expect(cancelled.status).toBe("CANCELLED");
    for (const id of [middleId!, innerId!]) {
      const run = await client.getRun(id);
      expect(run.status).toBe("CANCELLED");
      expect(run.error?.name).toBe("RunCancelled");
    }
    // The cancelled children did not resolve their parents' steps.
    expect((await client.getRun(parent.id)).steps).toEqual([]);
    expect((await client.getRun(middleId!)).steps).toEqual([]);
    expect(await stack.query("SELECT run_id FROM timers WHERE run_id = ANY($1::uuid[])", [[middleId, innerId]])).toEqual([]);
    expect(await stack.query("SELECT run_id FROM waits WHERE run_id = ANY($1::uuid[])", [[middleId, innerId]])).toEqual([]);
    // Each one's stepwise/run.cancelled event reaches the event stream and the journal.
    await eventually(
      async () => {
        const rows = await stack.query<{ id: string }>("SELECT id FROM events WHERE id = ANY($1::text[]) ORDER BY id", [
          [parent.id, middleId, innerId].map((id) => `stepwise-cancelled-${id}`),
        ]);
        return rows.length === 3 ? rows : undefined;
      },
      20_000,
      "three stepwise/run.cancelled events",
    );
    await eventually(async () => ((await stack.query("SELECT id FROM event_outbox")).length === 0 ? true : undefined), 10_000, "an empty outbox");
  });

  it("an invoked run cancelled on its own fails the invoking step with InvokedRunCancelled", async () => {
    const eventId = await send("invoke.start", { target: "waiting" });
    const parent = await runIn(eventId, "WAITING");
    const [childId] = await childrenOf(parent.id);
    await statusOf(childId!, "WAITING");
    await client.cancelRun(childId!, { reason: "not needed" });
    const done = await ended(eventId);
    expect(done.output).toEqual({
      error: {
        name: "StepError",
        message: `step "child" failed: run ${childId} of invoke/waiting was cancelled: not needed`,
        causeName: "InvokedRunCancelled",
        nonRetriable: true,
      },
    });
  });
});
