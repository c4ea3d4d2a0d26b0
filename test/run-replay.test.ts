import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { NonRetriableError, Stepwise, StepwiseError, Worker, type RunInfo } from "@stepwise/sdk";
import { Stack, eventually } from "./support/stack.js";

// RunService.RerunRun and ReplayRun on the real stack: ingest, scheduler and
// executor as separate processes, real NATS JetStream and Postgres.
describe("rerunning and replaying runs", () => {
  const stack = new Stack();
  let client: Stepwise;
  let worker: Worker;
  /** How often each step body ran. */
  const ran = new Map<string, number>();
  /** The bug in step 3, until it is fixed. */
  let shipIsBroken = true;
  const count = (step: string) => ran.set(step, (ran.get(step) ?? 0) + 1);

  async function ended(runId: string): Promise<RunInfo> {
    return eventually(
      async () => {
        const run = await client.getRun(runId);
        return ["COMPLETED", "FAILED", "CANCELLED"].includes(run.status) ? run : undefined;
      },
      20_000,
      `run ${runId} to end`,
    );
  }

  beforeAll(async () => {
    await stack.start();
    client = new Stepwise({ appId: "replay", url: stack.ingestUrl });
    const order = client.createFunction({ id: "order", triggers: [{ event: "order.placed" }], retries: 0 }, async ({ event, step }) => {
      const charge = await step.run("charge", () => {
        count("charge");
        return { paid: event.data["total"] };
      });
      const reserved = await step.run("reserve", () => {
        count("reserve");
        return { sku: "mug" };
      });
      const shipment = await step.run("ship", () => {
        count("ship");
        if (shipIsBroken) throw new NonRetriableError("the carrier's API changed");
        return { carrier: "acme" };
      });
      const mail = await step.run("notify", () => {
        count("notify");
        return "sent";
      });
      return { charge, reserved, shipment, mail };
    });
    worker = new Worker({ url: stack.executorUrl, functions: [order], handleSignals: false });
    await worker.connect();
  });

  afterAll(async () => {
    await worker?.close();
    client?.close();
    await stack.stop();
  });

  it("replays a failed 4-step run from step 3 after the fix: steps 1-2 do not run again, 3-4 do, and the runs are linked", async () => {
    const [eventId] = await client.send({ name: "order.placed", data: { total: 24 } });
    const { runs } = await client.waitForRuns(eventId!, { timeoutMs: 20_000 });
    const failed = await client.getRun(runs[0]!.id);
    expect(failed.status).toBe("FAILED");
    expect(failed.steps.map((s) => s.key)).toEqual(["charge:0", "reserve:0", "ship:0"]);
    expect(Object.fromEntries(ran)).toEqual({ charge: 1, reserve: 1, ship: 1 });

    shipIsBroken = false;
    const replay = await client.replayRun(failed.id, "ship:0");
    expect(replay).toMatchObject({ originRunId: failed.id, originStepKey: "ship:0", functionId: "order" });
    expect(replay.event.id).toBe(eventId);
    const done = await ended(replay.id);
    expect(done.status).toBe("COMPLETED");
    expect(done.output).toEqual({ charge: { paid: 24 }, reserved: { sku: "mug" }, shipment: { carrier: "acme" }, mail: "sent" });
    expect(done.steps.map((s) => s.key)).toEqual(["charge:0", "reserve:0", "ship:0", "notify:0"]);
    // Steps 1-2 returned their recorded results; 3-4 ran.
    expect(Object.fromEntries(ran)).toEqual({ charge: 1, reserve: 1, ship: 2, notify: 1 });
    expect((await client.getRun(failed.id)).derivedRunIds).toEqual([replay.id]);
    // The original is untouched.
    expect((await client.getRun(failed.id)).status).toBe("FAILED");
  });

  it("reruns a run from its first step, with the same event, linked to it", async () => {
    const before = Object.fromEntries(ran);
    const [eventId] = await client.send({ name: "order.placed", data: { total: 7 } });
    const { runs } = await client.waitForRuns(eventId!, { timeoutMs: 20_000 });
    const first = runs[0]!;
    expect(first.status).toBe("COMPLETED");
    const rerun = await client.rerunRun(first.id);
    expect(rerun).toMatchObject({ originRunId: first.id, originStepKey: undefined, event: { id: eventId } });
    const done = await ended(rerun.id);
    expect(done.status).toBe("COMPLETED");
    expect(done.steps.map((s) => s.key)).toEqual(["charge:0", "reserve:0", "ship:0", "notify:0"]);
    // Every step ran once for the first run and once for the rerun.
    for (const step of ["charge", "reserve", "ship", "notify"]) expect(ran.get(step)).toBe((before[step] ?? 0) + 2);
    // Both runs are runs of the event.
    const ofEvent = await client.listRunsOfEvent(eventId!);
    expect(ofEvent.map((r) => r.id).sort()).toEqual([first.id, rerun.id].sort());
    expect((await client.getRun(first.id)).derivedRunIds).toEqual([rerun.id]);
  });

  it("RerunRuns replays every failed run of the function from a step after the fix, and skips those that never reached it", async () => {
    shipIsBroken = true;
    const sent = await client.send(Array.from({ length: 5 }, (_, i) => ({ name: "order.placed", data: { total: 100 + i } })));
    const failed = [];
    for (const id of sent) {
      const { runs } = await client.waitForRuns(id, { timeoutMs: 20_000 });
      expect(runs[0]!.status).toBe("FAILED");
      failed.push(runs[0]!.id);
    }
    shipIsBroken = false;
    const before = Object.fromEntries(ran);
    const { started, skipped } = await client.rerunRuns({ functionId: "order", fromStep: "ship:0", if: "int(event.data.total) >= 100" });
    expect({ started, skipped }).toEqual({ started: 5, skipped: 0 });
    for (const id of failed) {
      const origin = await client.getRun(id);
      expect(origin.derivedRunIds).toHaveLength(1);
      const replay = await ended(origin.derivedRunIds[0]!);
      expect(replay).toMatchObject({ status: "COMPLETED", originRunId: id, originStepKey: "ship:0" });
    }
    // Charge and reserve did not run again; ship and notify ran once per replay.
    expect(ran.get("charge")).toBe(before["charge"]);
    expect(ran.get("reserve")).toBe(before["reserve"]);
    expect(ran.get("ship")).toBe((before["ship"] ?? 0) + 5);
    expect(ran.get("notify")).toBe((before["notify"] ?? 0) + 5);
    // The origins stay FAILED; a replay from a step none of them journaled skips them all.
    expect(await client.rerunRuns({ functionId: "order", fromStep: "never:0", if: "int(event.data.total) >= 100" })).toEqual({
      started: 0,
      skipped: 5,
    });
    const bad = await client.rerunRuns({ functionId: "order", statuses: ["QUEUED" as never] }).catch((e: unknown) => e);
    expect((bad as StepwiseError).code).toBe("invalid_argument");
  });

  it("refuses an unknown run, a replay of a run that has not ended, and a step the run never journaled", async () => {
    const code = (p: Promise<unknown>) =>
      p.then(
        () => undefined,
        (err: unknown) => (err as StepwiseError).code,
      );
    expect(await code(client.rerunRun("00000000-0000-4000-8000-000000000000"))).toBe("not_found");
    expect(await code(client.replayRun("nope", "ship:0"))).toBe("not_found");
    const [eventId] = await client.send({ name: "order.placed", data: { total: 1 } });
    const { runs } = await client.waitForRuns(eventId!, { timeoutMs: 20_000 });
    expect(await code(client.replayRun(runs[0]!.id, "never:0"))).toBe("failed_precondition");
    expect(await code(client.replayRun(runs[0]!.id, ""))).toBe("invalid_argument");
    // With no worker connected, a new run stays QUEUED: it has not ended.
    await worker.close();
    const [queuedEvent] = await client.send({ name: "order.placed", data: { total: 2 } });
    const queued = await eventually(async () => (await client.listRunsOfEvent(queuedEvent!))[0], 10_000, "a queued run");
    const err = await client.replayRun(queued.id, "charge:0").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StepwiseError);
    expect((err as StepwiseError).code).toBe("failed_precondition");
    expect((err as StepwiseError).message).toContain("QUEUED");
  });
});
