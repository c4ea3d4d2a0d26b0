import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Stepwise, Worker } from "@stepwise/sdk";
import { Stack, eventually } from "./support/stack.js";

// The order workflow on the real stack: ingest, scheduler and executor as
// separate processes, real NATS JetStream, real Postgres.
describe("order workflow on the real stack", () => {
  const stack = new Stack();
  let client: Stepwise;
  let worker: Worker;
  const calls = { body: 0, payment: 0, inventory: 0, shipment: 0, notification: 0 };

  beforeAll(async () => {
    await stack.start();
    client = new Stepwise({ appId: "shop", url: stack.ingestUrl });
    const order = client.createFunction(
      { id: "order-processing", triggers: [{ event: "order.placed" }] },
      async ({ event, step }) => {
        // Outside any step: counts how often the handler body runs.
        calls.body++;
        const orderId = String(event.data["orderId"]);
        const payment = await step.run("process-payment", () => {
          calls.payment++;
          return { paymentId: `pay_${orderId}`, amount: 2400 };
        });
        const stock = await step.run("check-inventory", () => {
          calls.inventory++;
          return { inStock: true };
        });
        const shipment = await step.run("schedule-shipment", () => {
          calls.shipment++;
          return { shipmentId: `ship_${orderId}`, inStock: stock.inStock };
        });
        await step.run("send-notification", () => {
          calls.notification++;
          return { sent: true, payment: payment.paymentId };
        });
        return { orderId, shipmentId: shipment.shipmentId };
      },
    );
    worker = new Worker({ url: stack.executorUrl, functions: [order], handleSignals: false, maxReconnectDelayMs: 500 });
    await worker.connect();
  });

  afterAll(async () => {
    await worker?.close();
    await stack.stop();
  });

  it("runs the four steps once each, journals them in order, and GetRun returns them with outputs and timings", async () => {
    const t0 = performance.now();
    const [eventId] = await client.send({ name: "order.placed", data: { orderId: "o-1" } });
    const run = await eventually(async () => {
      const [r] = await client.listRunsOfEvent(eventId!);
      if (!r || r.status !== "COMPLETED") return undefined;
      return client.getRun(r.id);
    }, 20_000, "the run to complete");
    const elapsed = performance.now() - t0;
    console.log(`order workflow end to end on the real stack: ${elapsed.toFixed(1)} ms`);

    expect(run.status).toBe("COMPLETED");
    expect(run.output).toEqual({ orderId: "o-1", shipmentId: "ship_o-1" });
    expect(run.steps.map((s) => s.id)).toEqual(["process-payment", "check-inventory", "schedule-shipment", "send-notification"]);
    expect(run.steps[0]!.output).toEqual({ paymentId: "pay_o-1", amount: 2400 });
    expect(run.steps[3]!.output).toEqual({ sent: true, payment: "pay_o-1" });
    for (const s of run.steps) {
      expect(s.attempt).toBe(1);
      expect(s.startedAt).toBeInstanceOf(Date);
      expect(s.endedAt!.getTime()).toBeGreaterThanOrEqual(s.startedAt!.getTime());
    }
    expect(run.startedAt).toBeInstanceOf(Date);
    expect(run.endedAt!.getTime()).toBeGreaterThanOrEqual(run.startedAt!.getTime());

    // The journal itself: exactly four rows, in order, one per step.
    const rows = await stack.query<{ step_id: string; output: unknown }>(
      "SELECT step_id, output FROM steps WHERE run_id = $1 ORDER BY seq",
      [run.id],
    );
    expect(rows.map((r) => r.step_id)).toEqual(["process-payment", "check-inventory", "schedule-shipment", "send-notification"]);

    // Streaming, not replay: the body ran once for four steps.
    expect(calls).toEqual({ body: 1, payment: 1, inventory: 1, shipment: 1, notification: 1 });
  });

  it("completes warm runs one after another (end-to-end time printed, not asserted)", async () => {
    const times: number[] = [];
    for (let i = 0; i < 20; i++) {
      const t0 = performance.now();
      const [eventId] = await client.send({ name: "order.placed", data: { orderId: `warm-${i}` } });
      for (;;) {
        const rows = await stack.query<{ status: string }>("SELECT status FROM runs WHERE event_id = $1", [eventId]);
        if (rows[0]?.status === "COMPLETED") break;
        await new Promise((r) => setTimeout(r, 1));
      }
      times.push(performance.now() - t0);
      const steps = await stack.query("SELECT 1 FROM steps s JOIN runs r ON r.id = s.run_id WHERE r.event_id = $1", [eventId]);
      expect(steps).toHaveLength(4);
    }
    times.sort((a, b) => a - b);
    console.log(`order workflow, warm, Send to COMPLETED in Postgres: p50 ${times[10]!.toFixed(1)} ms, max ${times[19]!.toFixed(1)} ms`);
  });

  it("creates one run per event id, however often the event is sent", async () => {
    const id = `dup-${Date.now()}`;
    const [a, b] = await Promise.all([
      client.send({ id, name: "order.placed", data: { orderId: "dup" } }),
      client.send({ id, name: "order.placed", data: { orderId: "dup" } }),
    ]);
    expect(a).toEqual([id]);
    expect(b).toEqual([id]);
    await eventually(async () => {
      const runs = await client.listRunsOfEvent(id);
      return runs.length === 1 && runs[0]!.status === "COMPLETED" ? true : undefined;
    });
    // Again after the run finished: still one run.
    await client.send({ id, name: "order.placed", data: { orderId: "dup" } });
    const before = await stack.eventStreamCount();
    await new Promise((r) => setTimeout(r, 500));
    expect(await stack.eventStreamCount()).toBe(before);
    const runs = await stack.query<{ n: string }>("SELECT count(*) AS n FROM runs WHERE event_id = $1", [id]);
    expect(Number(runs[0]!.n)).toBe(1);
  });

  it("stores an event no function is registered for and makes no run of it", async () => {
    const [id] = await client.send({ name: "nobody.listens", data: { x: 1 } });
    await eventually(async () => {
      const rows = await stack.query("SELECT 1 FROM events WHERE id = $1", [id]);
      return rows.length === 1 ? true : undefined;
    });
    // The scheduler has committed the event; wait a little longer and check no run appeared.
    await new Promise((r) => setTimeout(r, 300));
    const runs = await stack.query<{ n: string }>("SELECT count(*) AS n FROM runs WHERE event_id = $1", [id]);
    expect(Number(runs[0]!.n)).toBe(0);
  });
});
