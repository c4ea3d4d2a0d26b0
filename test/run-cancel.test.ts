import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Stepwise, StepwiseError, Worker, type RunInfo } from "@stepwise/sdk";
import { eventually, gate, runOfEventIn, Stack } from "./support/stack.js";

// RunService.CancelRun on the real stack: ingest, scheduler and executor as
// separate processes, real NATS JetStream and Postgres, a one-slot worker.
describe("cancelling runs", () => {
  const stack = new Stack();
  let client: Stepwise;
  let worker: Worker;
  let functions: ConstructorParameters<typeof Worker>[0]["functions"] = [];
  let afterSlow = 0;
  let slowStarted = gate();
  let slowRelease = gate();
  let slowSignal: AbortSignal | undefined;

  /** The run an event started, once it is in `status`. */
  /** The one run an event started, once it is in `status`. */
  const runIn = (eventId: string, status: RunInfo["status"], timeoutMs?: number) => runOfEventIn(client, eventId, status, timeoutMs);

  /** The runs the run's "stepwise/run.cancelled" event started, once they ended. */
  async function cancelledEventRuns(runId: string): Promise<RunInfo[]> {
    const { runs, done } = await client.waitForRuns(`stepwise-cancelled-${runId}`, { timeoutMs: 20_000 });
    expect(done).toBe(true);
    return Promise.all(runs.map((r) => client.getRun(r.id)));
  }

  async function send(name: string, data: Record<string, unknown> = {}): Promise<string> {
    const [id] = await client.send({ name, data });
    return id!;
  }

  beforeAll(async () => {
    await stack.start();
    client = new Stepwise({ appId: "cancel", url: stack.ingestUrl });
    const slow = client.createFunction({ id: "slow", triggers: [{ event: "slow" }] }, async ({ step }) => {
      await step.run("first", () => 1);
      await step.run("slow", async ({ signal }) => {
        slowSignal = signal;
        slowStarted.open();
        await slowRelease.promise;
        return 2;
      });
      await step.run("after", () => ++afterSlow);
      return "done";
    });
    const sleeper = client.createFunction({ id: "sleeper", triggers: [{ event: "nap" }] }, async ({ step }) => {
      await step.sleep("nap", "1h");
      return "woke";
    });
    const waiter = client.createFunction({ id: "waiter", triggers: [{ event: "wait" }] }, async ({ step }) => {
      await step.waitForEvent("never", { event: "never.sent", timeout: "1h" });
      return "resolved";
    });
    const quick = client.createFunction({ id: "quick", triggers: [{ event: "quick" }] }, async ({ step }) => step.run("only", () => "quick"));
    const listener = client.createFunction(
      { id: "on-cancelled", triggers: [{ event: "stepwise/run.cancelled", if: "event.data.app_id == 'cancel'" }] },
      async ({ event }) => ({ runId: event.data["run_id"], functionId: event.data["function_id"], reason: event.data["reason"] }),
    );
    functions = [slow, sleeper, waiter, quick, listener];
    worker = new Worker({ url: stack.executorUrl, functions, capacity: 1, handleSignals: false });
    await worker.connect();
  });

  afterAll(async () => {
    await worker?.close();
    client?.close();
    await stack.stop();
  });

  it("a RUNNING run in the middle of a step: CANCELLED, nothing journaled after, the next step never runs, the slot frees", async () => {
    slowStarted = gate();
    slowRelease = gate();
    const eventId = await send("slow");
    await slowStarted.promise;
    const [running] = await client.listRunsOfEvent(eventId);
    expect(running?.status).toBe("RUNNING");
    const cancelled = await client.cancelRun(running!.id, { reason: "wrong order" });
    expect(cancelled.status).toBe("CANCELLED");
    expect(cancelled.error).toMatchObject({ name: "RunCancelled", message: "wrong order" });
    // The worker hears of it and aborts the step body's signal.
    await eventually(async () => (slowSignal?.aborted ? true : undefined), 10_000, "the step's signal to abort");
    slowRelease.open();
    // The one slot is free again: another run completes on it.
    const quickEvent = await send("quick");
    const { runs: quickRuns } = await client.waitForRuns(quickEvent, { timeoutMs: 20_000 });
    expect(quickRuns.map((r) => r.status)).toEqual(["COMPLETED"]);
    const after = await client.getRun(running!.id);
    expect(after.status).toBe("CANCELLED");
    expect(after.steps.map((s) => s.key)).toEqual(["first:0"]);
    expect(afterSlow).toBe(0);
    const [listened] = await cancelledEventRuns(running!.id);
    expect(listened).toMatchObject({ functionId: "on-cancelled", status: "COMPLETED" });
    expect(listened!.output).toEqual({ runId: running!.id, functionId: "slow", reason: "wrong order" });
  });

  it("a QUEUED run with no worker: CANCELLED at once, and WaitForRuns answers", async () => {
    await worker.close();
    try {
      const eventId = await send("quick");
      const queued = await runIn(eventId, "QUEUED");
      const waiting = client.waitForRuns(eventId, { timeoutMs: 20_000 });
      const cancelled = await client.cancelRun(queued.id);
      expect(cancelled.status).toBe("CANCELLED");
      expect(cancelled.error?.message).toBe("cancelled");
      const { runs, done } = await waiting;
      expect(done).toBe(true);
      expect(runs.map((r) => r.status)).toEqual(["CANCELLED"]);
    } finally {
      worker = new Worker({ url: stack.executorUrl, functions, capacity: 1, handleSignals: false });
      await worker.connect();
    }
  });

  it("a run WAITING on a sleep and one WAITING for an event: CANCELLED, their timers and waits gone", async () => {
    const napEvent = await send("nap");
    const waitEvent = await send("wait");
    const napping = await runIn(napEvent, "WAITING");
    const waiting = await runIn(waitEvent, "WAITING");
    expect(await stack.query("SELECT run_id FROM timers WHERE run_id = $1", [napping.id])).toHaveLength(1);
    expect(await stack.query("SELECT run_id FROM waits WHERE run_id = $1", [waiting.id])).toHaveLength(1);
    expect((await client.cancelRun(napping.id, { reason: "no nap" })).status).toBe("CANCELLED");
    expect((await client.cancelRun(waiting.id)).status).toBe("CANCELLED");
    expect(await stack.query("SELECT run_id FROM timers WHERE run_id = ANY($1::uuid[])", [[napping.id, waiting.id]])).toEqual([]);
    expect(await stack.query("SELECT run_id FROM waits WHERE run_id = ANY($1::uuid[])", [[napping.id, waiting.id]])).toEqual([]);
    for (const run of [napping, waiting]) {
      const [listened] = await cancelledEventRuns(run.id);
      expect(listened?.status).toBe("COMPLETED");
    }
    // Nothing is left in the outbox once the events are on the stream.
    await eventually(async () => ((await stack.query("SELECT id FROM event_outbox")).length === 0 ? true : undefined), 10_000, "an empty outbox");
  });

  it("refuses an ended run with FAILED_PRECONDITION naming its status, and an unknown one with NOT_FOUND", async () => {
    const eventId = await send("quick");
    const { runs } = await client.waitForRuns(eventId, { timeoutMs: 20_000 });
    const completed = runs[0]!;
    const refused = (id: string) =>
      client.cancelRun(id).then(
        () => undefined,
        (err: unknown) => err,
      );
    const ended = await refused(completed.id);
    expect(ended).toBeInstanceOf(StepwiseError);
    expect((ended as StepwiseError).code).toBe("failed_precondition");
    expect((ended as StepwiseError).message).toContain("COMPLETED");
    for (const id of ["00000000-0000-4000-8000-000000000000", "not-a-run"]) {
      const unknown = await refused(id);
      expect((unknown as StepwiseError).code).toBe("not_found");
    }
    const tooLong = await client.cancelRun(completed.id, { reason: "x".repeat(1025) }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect((tooLong as StepwiseError).code).toBe("invalid_argument");
    // A cancelled run stays cancelled: a second cancel is refused too.
    const napEvent = await send("nap");
    const napping = await runIn(napEvent, "WAITING");
    await client.cancelRun(napping.id);
    const again = await refused(napping.id);
    expect((again as StepwiseError).code).toBe("failed_precondition");
    expect((again as StepwiseError).message).toContain("CANCELLED");
  });

  it("CancelRuns cancels the waiting runs of a function that its condition selects, and no other run", async () => {
    const bulk = new Stepwise({ appId: "bulk", url: stack.ingestUrl });
    const sleeper = bulk.createFunction({ id: "sleeper", triggers: [{ event: "bulk.nap" }] }, async ({ step }) => {
      await step.sleep("nap", "1h");
    });
    const other = bulk.createFunction({ id: "other", triggers: [{ event: "bulk.nap" }] }, async ({ step }) => {
      await step.sleep("nap", "1h");
    });
    const bulkWorker = new Worker({ url: stack.executorUrl, functions: [sleeper, other], capacity: 100, handleSignals: false });
    await bulkWorker.connect();
    try {
      const N = 1_000;
      for (let i = 0; i < N; i += 250) {
        await bulk.send(Array.from({ length: 250 }, (_, j) => ({ name: "bulk.nap", data: { n: i + j } })));
      }
      const waiting = () =>
        stack.query<{ function_id: string; status: string; n: number }>(
          "SELECT function_id, status, count(*)::int AS n FROM runs WHERE app_id = 'bulk' GROUP BY 1, 2 ORDER BY 1, 2",
        );
      await eventually(
        async () => ((await waiting()).every((r) => r.status === "WAITING") && (await waiting()).reduce((a, r) => a + r.n, 0) === 2 * N ? true : undefined),
        60_000,
        "every bulk run asleep",
      );
      const started = Date.now();
      const cancelled = await bulk.cancelRuns({ functionId: "sleeper", statuses: ["WAITING"], if: "int(event.data.n) % 2 == 0", reason: "evens" });
      const ms = Date.now() - started;
      expect(cancelled).toBe(N / 2);
      expect(await waiting()).toEqual([
        { function_id: "other", status: "WAITING", n: N },
        { function_id: "sleeper", status: "CANCELLED", n: N / 2 },
        { function_id: "sleeper", status: "WAITING", n: N / 2 },
      ]);
      const odd = await stack.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM runs r JOIN events e ON e.id = r.event_id
         WHERE r.app_id = 'bulk' AND r.function_id = 'sleeper' AND r.status = 'CANCELLED' AND (e.data->>'n')::int % 2 = 1`,
      );
      expect(odd).toEqual([{ n: 0 }]);
      expect(await stack.query("SELECT run_id FROM timers t JOIN runs r ON r.id = t.run_id WHERE r.status = 'CANCELLED'")).toEqual([]);
      // A second call finds nothing left to cancel.
      expect(await bulk.cancelRuns({ functionId: "sleeper", statuses: ["WAITING"], if: "int(event.data.n) % 2 == 0" })).toBe(0);
      console.log(`CancelRuns of ${N / 2} of ${N} waiting runs (condition on each): ${ms} ms`);

      const invalid = async (filter: Parameters<typeof bulk.cancelRuns>[0]) =>
        bulk.cancelRuns(filter).then(
          () => undefined,
          (err: unknown) => (err as StepwiseError).code,
        );
      expect(await invalid({ functionId: "sleeper", if: "event.data.n >" })).toBe("invalid_argument");
      expect(await invalid({ functionId: "" })).toBe("invalid_argument");
      expect(await invalid({ functionId: "sleeper", createdAfter: new Date(2), createdBefore: new Date(1) })).toBe("invalid_argument");
    } finally {
      await bulkWorker.close();
      bulk.close();
    }
  }, 120_000);
});
