import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { NonRetriableError, StepError, Stepwise, Worker } from "@stepwise/sdk";
import { Stack, eventually, gate } from "./support/stack.js";

// step.sendEvent on the real stack: ingest, scheduler and executor as
// separate processes, real NATS JetStream and Postgres.
describe("step.sendEvent", () => {
  const stack = new Stack();
  let client: Stepwise;
  let worker: Worker;
  let sendBodies = 0;
  let go = gate();

  beforeAll(async () => {
    await stack.start();
    client = new Stepwise({ appId: "sender", url: stack.ingestUrl });
    const sender = client.createFunction({ id: "sender", triggers: [{ event: "order.paid" }] }, async ({ event, step }) => {
      // Outside any step: the test holds the run here before the send.
      if (event.data["hold"]) await go.promise;
      sendBodies++;
      const ids = await step.sendEvent("notify", [
        { name: "warehouse.notified", data: { orderId: event.data["orderId"] } },
        { name: "warehouse.notified", data: { orderId: event.data["orderId"], copy: true } },
      ]);
      return { ids };
    });
    const refused = client.createFunction({ id: "refused", triggers: [{ event: "bad.send" }] }, async ({ step }) => {
      try {
        await step.sendEvent("bad", { name: "", data: {} });
        return "sent";
      } catch (err) {
        return err instanceof StepError ? { caught: err.cause instanceof Error ? err.cause.name : String(err.cause) } : "other";
      }
    });
    const listener = client.createFunction({ id: "listener", triggers: [{ event: "warehouse.notified" }] }, async ({ event, step }) =>
      step.run("note", () => event.data),
    );
    worker = new Worker({ url: stack.executorUrl, functions: [sender, refused, listener], handleSignals: false, maxReconnectDelayMs: 200 });
    await worker.connect();
  });

  afterAll(async () => {
    await worker?.close();
    client?.close();
    await stack.stop();
  });

  it("sends its events once, with ids derived from the run and the step, journaled as the step's result", async () => {
    const [eventId] = await client.send({ name: "order.paid", data: { orderId: "o-1" } });
    const { runs } = await client.waitForRuns(eventId!, { timeoutMs: 20_000 });
    const run = await client.getRun(runs[0]!.id);
    expect(run.status).toBe("COMPLETED");
    const ids = (run.output as { ids: string[] }).ids;
    expect(ids).toHaveLength(2);
    expect(ids[0]).toMatch(new RegExp(`^${run.id}-[0-9a-f]{16}-0$`));
    expect(run.steps.map((s) => s.key)).toEqual(["notify:0"]);
    expect(run.steps[0]!.output).toEqual(ids);
    for (const id of ids) {
      const { runs: listened } = await client.waitForRuns(id, { timeoutMs: 20_000 });
      expect(listened.map((r) => [r.functionId, r.status])).toEqual([["listener", "COMPLETED"]]);
    }
  });

  it("an executor killed between the send and the step's journal entry: the events are stored once and their function runs once", async () => {
    go = gate();
    const bodiesBefore = sendBodies;
    const [eventId] = await client.send({ name: "order.paid", data: { orderId: "o-2", hold: true } });
    const held = await eventually(async () => {
      const [r] = await client.listRunsOfEvent(eventId!);
      return r?.status === "RUNNING" ? r : undefined;
    }, 20_000, "the run to be held");
    // Frozen, the executor cannot journal the step: the send reaches ingest, the result does not land.
    process.kill(stack.procs.get("executor")!.pid!, "SIGSTOP");
    go.open();
    const sent = await eventually(
      async () => {
        const rows = await stack.query<{ id: string }>("SELECT id FROM events WHERE name = 'warehouse.notified' AND data->>'orderId' = 'o-2'");
        return rows.length === 2 ? rows : undefined;
      },
      20_000,
      "the events to be stored",
    );
    expect(await stack.query("SELECT step_key FROM steps WHERE run_id = $1", [held.id])).toEqual([]);
    await stack.kill("executor", "SIGKILL");
    await stack.startService("executor");
    const run = await eventually(
      async () => {
        const r = await client.getRun(held.id);
        return r.status === "COMPLETED" ? r : undefined;
      },
      30_000,
      "the run to complete on the new executor",
    );
    // The send ran again after the crash, with the same ids.
    expect(sendBodies - bodiesBefore).toBeGreaterThanOrEqual(2);
    expect([...(run.output as { ids: string[] }).ids].sort()).toEqual(sent.map((r) => r.id).sort());
    expect(await stack.query("SELECT id FROM events WHERE name = 'warehouse.notified' AND data->>'orderId' = 'o-2'")).toHaveLength(2);
    // A listener run whose work message the killed executor had pulled waits for the work
    // consumer's redelivery (its 30 s ack wait), so this waits longer than the rest.
    for (const { id } of sent) {
      const { runs } = await client.waitForRuns(id, { timeoutMs: 60_000 });
      expect(runs.map((r) => [r.functionId, r.status])).toEqual([["listener", "COMPLETED"]]);
    }
  }, 150_000);

  it("an event the engine refuses fails the step at once, and the handler can catch it", async () => {
    const [eventId] = await client.send({ name: "bad.send", data: {} });
    const { runs } = await client.waitForRuns(eventId!, { timeoutMs: 20_000 });
    const run = await client.getRun(runs[0]!.id);
    expect(run.status).toBe("COMPLETED");
    expect(run.output).toEqual({ caught: new NonRetriableError("x").name });
    expect(run.steps[0]!.attempt).toBe(1);
  });
});
