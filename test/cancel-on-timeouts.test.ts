import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Stepwise, Worker, type RunInfo } from "@stepwise/sdk";
import { eventually, type ExtraService, gate, runOfEventIn, Stack } from "./support/stack.js";

// A function's cancelOn rules and timeouts on the real stack: ingest, two
// schedulers and an executor as separate processes, real NATS JetStream and
// Postgres.
describe("cancelOn and timeouts", () => {
  const stack = new Stack();
  let secondScheduler: ExtraService;
  let client: Stepwise;
  let worker: Worker;
  let functions: ConstructorParameters<typeof Worker>[0]["functions"] = [];
  let stepStarted = gate();
  let stepSignal: AbortSignal | undefined;
  let afterAbortable = 0;

  /** The one run an event started, once it is in `status`. */
  /** The one run an event started, once it is in `status`. */
  const runIn = (eventId: string, status: RunInfo["status"], timeoutMs?: number) => runOfEventIn(client, eventId, status, timeoutMs);

  async function send(name: string, data: Record<string, unknown> = {}): Promise<string> {
    const [id] = await client.send({ name, data });
    return id!;
  }

  beforeAll(async () => {
    await stack.start();
    secondScheduler = await stack.startExtra("scheduler");
    client = new Stepwise({ appId: "rules", url: stack.ingestUrl });
    const order = client.createFunction(
      {
        id: "order",
        triggers: [{ event: "order.placed" }],
        cancelOn: [{ event: "order.cancelled", match: "data.orderId" }],
      },
      async ({ step }) => {
        await step.run("charge", () => "charged");
        await step.sleep("ship-later", "1h");
        return "shipped";
      },
    );
    const abortable = client.createFunction(
      {
        id: "abortable",
        triggers: [{ event: "job.started" }],
        cancelOn: [{ event: "job.stop", if: "async.data.job == event.data.job && async.data.force == true" }],
      },
      async ({ step }) => {
        await step.run("work", async ({ signal }) => {
          stepSignal = signal;
          stepStarted.open();
          await new Promise((resolve) => signal.addEventListener("abort", resolve));
          return "stopped";
        });
        await step.run("after", () => ++afterAbortable);
      },
    );
    const windowed = client.createFunction(
      { id: "windowed", triggers: [{ event: "window.open" }], cancelOn: [{ event: "window.close", timeout: "1s" }] },
      async ({ step }) => {
        await step.sleep("stay", "1h");
      },
    );
    const slowStart = client.createFunction({ id: "slow-start", triggers: [{ event: "start.late" }], timeouts: { start: "1s" } }, () => "ran");
    const longRun = client.createFunction(
      { id: "long-run", triggers: [{ event: "run.long" }], timeouts: { finish: "2s" } },
      async ({ step }) => {
        await step.run("first", () => 1);
        await step.sleep("too-long", "1h");
        return "finished";
      },
    );
    functions = [order, abortable, windowed, slowStart, longRun];
    worker = new Worker({ url: stack.executorUrl, functions, handleSignals: false });
    await worker.connect();
  });

  afterAll(async () => {
    await worker?.close();
    client?.close();
    await secondScheduler?.kill("SIGKILL");
    await stack.stop();
  });

  it("the matching event cancels a waiting run; one for another key does not", async () => {
    const a = await send("order.placed", { orderId: "a" });
    const b = await send("order.placed", { orderId: "b" });
    const runA = await runIn(a, "WAITING");
    const runB = await runIn(b, "WAITING");
    const stop = await send("order.cancelled", { orderId: "a" });
    const cancelled = await runIn(a, "CANCELLED");
    expect(cancelled.error).toMatchObject({ name: "RunCancelled", message: `cancelOn: event "order.cancelled" (${stop})` });
    expect(await stack.query("SELECT run_id FROM timers WHERE run_id = $1", [runA.id])).toEqual([]);
    // A cancelling event for another order, and time for it to be handled: b goes on waiting.
    const other = await send("order.cancelled", { orderId: "zzz" });
    await client.waitForRuns(other, { timeoutMs: 2_000 });
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect((await client.getRun(runB.id)).status).toBe("WAITING");
  });

  it("a cancelling event sent right after the trigger is never missed (50 times, two schedulers)", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 50; i++) {
      const orderId = `race-${i}`;
      ids.push(await send("order.placed", { orderId }));
      await send("order.cancelled", { orderId });
    }
    const runs = await Promise.all(ids.map((id) => runIn(id, "CANCELLED", 30_000)));
    expect(runs).toHaveLength(50);
    for (const run of runs) expect(run.error?.message).toMatch(/^cancelOn: event "order.cancelled"/);
    // Both schedulers took part.
    expect(secondScheduler.proc.exitCode).toBeNull();
  });

  it("a RUNNING run: its step's signal aborts and the next step never runs; a condition that fails leaves it", async () => {
    stepStarted = gate();
    const started = await send("job.started", { job: "j1" });
    await stepStarted.promise;
    const running = await runIn(started, "RUNNING");
    const notForced = await send("job.stop", { job: "j1", force: false });
    await client.waitForRuns(notForced, { timeoutMs: 2_000 });
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect((await client.getRun(running.id)).status).toBe("RUNNING");
    expect(stepSignal?.aborted).toBe(false);
    await send("job.stop", { job: "j1", force: true });
    await runIn(started, "CANCELLED");
    await eventually(async () => (stepSignal?.aborted ? true : undefined), 10_000, "the step's signal to abort");
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(afterAbortable).toBe(0);
    expect((await client.getRun(running.id)).steps.map((s) => s.key)).toEqual([]);
  });

  it("a rule's timeout closes its window: an event after it cancels nothing", async () => {
    const old = await send("window.open");
    const oldRun = await runIn(old, "WAITING");
    // Its rule holds for 1 s after its event.
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    const fresh = await send("window.open");
    const freshRun = await runIn(fresh, "WAITING");
    await send("window.close");
    const cancelled = await runIn(fresh, "CANCELLED");
    expect(cancelled.id).toBe(freshRun.id);
    expect(cancelled.error?.message).toMatch(/^cancelOn: event "window.close"/);
    expect((await client.getRun(oldRun.id)).status).toBe("WAITING");
  });

  it("timeouts.start: a run no worker starts within 1s ends CANCELLED, saying so", async () => {
    await worker.close();
    try {
      const eventId = await send("start.late");
      const queued = await runIn(eventId, "QUEUED");
      const cancelled = await runIn(eventId, "CANCELLED", 10_000);
      expect(cancelled.id).toBe(queued.id);
      expect(cancelled.error).toMatchObject({ name: "RunCancelled", message: "timeouts.start: not started within 1s" });
      expect(cancelled.startedAt).toBeUndefined();
    } finally {
      worker = new Worker({ url: stack.executorUrl, functions, handleSignals: false });
      await worker.connect();
    }
  });

  it("timeouts.finish: a run sleeping past it ends CANCELLED, its timer gone", async () => {
    const eventId = await send("run.long");
    const waiting = await runIn(eventId, "WAITING");
    const cancelled = await runIn(eventId, "CANCELLED", 10_000);
    expect(cancelled.error).toMatchObject({ name: "RunCancelled", message: "timeouts.finish: not finished within 2s of its start" });
    const took = cancelled.endedAt!.getTime() - cancelled.startedAt!.getTime();
    expect(took).toBeGreaterThanOrEqual(2_000);
    expect(took).toBeLessThan(5_000);
    expect(await stack.query("SELECT run_id FROM timers WHERE run_id = $1", [waiting.id])).toEqual([]);
    expect(await stack.query("SELECT run_id FROM run_deadlines WHERE run_id = $1", [waiting.id])).toEqual([]);
  });
});
