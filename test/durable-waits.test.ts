import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { NonRetriableError, RetryAfterError, StepError, Stepwise, Worker, type RunInfo } from "@stepwise/sdk";
import { Stack, eventually } from "./support/stack.js";

// Sleeps, waits for events, retries and onFailure on the real stack:
// ingest, scheduler and executor as separate processes, real NATS JetStream
// and Postgres, a worker on a real Connect stream.
describe("durable waits and retries on the real stack", () => {
  const stack = new Stack();
  let client: Stepwise;
  let worker: Worker;
  const attempts = new Map<string, number[]>();
  const failureRuns: Array<{ failedRunId: string; error: string; orderId: unknown }> = [];

  const note = (key: string) => {
    const list = attempts.get(key) ?? [];
    list.push(Date.now());
    attempts.set(key, list);
    return list.length;
  };

  async function finished(eventId: string, fnId?: string): Promise<RunInfo> {
    return eventually(
      async () => {
        const runs = await client.listRunsOfEvent(eventId);
        const r = runs.find((x) => !fnId || x.functionId === fnId);
        if (!r || !["COMPLETED", "FAILED"].includes(r.status)) return undefined;
        return client.getRun(r.id);
      },
      30_000,
      `the run of ${eventId} to finish`,
    );
  }

  beforeAll(async () => {
    await stack.start();
    client = new Stepwise({ appId: "waits", url: stack.ingestUrl });
    const order = client.createFunction(
      { id: "order", triggers: [{ event: "order.placed" }] },
      async ({ event, step }) => {
        await step.run("schedule-shipment", () => ({ scheduled: true }));
        const shipment = await step.waitForEvent("wait-for-shipment", {
          event: "shipment.created",
          timeout: String(event.data["timeout"] ?? "3s"),
          if: "event.data.orderId == async.data.orderId",
        });
        return { shipment: shipment ? { id: shipment.id, data: shipment.data } : null };
      },
    );
    const sleeper = client.createFunction({ id: "sleeper", triggers: [{ event: "nap" }] }, async ({ event, step }) => {
      const before = await step.run("before", () => Date.now());
      await step.sleep("nap", Number(event.data["ms"] ?? 1500));
      const after = await step.run("after", () => Date.now());
      return { slept: after - before };
    });
    const quick = client.createFunction({ id: "quick", triggers: [{ event: "quick" }] }, async ({ step }) =>
      step.run("only", () => Date.now()),
    );
    const flaky = client.createFunction(
      { id: "flaky", triggers: [{ event: "flaky" }], retries: 3, backoff: { base: 300, factor: 2, jitter: false } },
      async ({ event, step }) =>
        step.run("call", () => {
          const n = note(`flaky:${event.id}`);
          if (n < 3) throw new Error(`attempt ${n} failed`);
          return { attempt: n };
        }),
    );
    const fatal = client.createFunction(
      {
        id: "fatal",
        triggers: [{ event: "fatal" }],
        retries: 2,
        backoff: { base: 100, jitter: false },
        onFailure: async ({ event, error, failedRunId, step }) => {
          await step.run("record", () => {
            failureRuns.push({ failedRunId, error: error.message, orderId: event.data["orderId"] });
          });
        },
      },
      async ({ event, step }) => {
        const mode = String(event.data["mode"]);
        try {
          await step.run("charge", () => {
            note(`fatal:${event.id}`);
            if (mode === "non-retriable") throw new NonRetriableError("card refused");
            throw new Error("gateway down");
          });
        } catch (err) {
          if (mode === "catch" && err instanceof StepError) return { handled: err.message };
          throw err;
        }
        return "unreachable";
      },
    );
    const later = client.createFunction(
      { id: "later", triggers: [{ event: "later" }], retries: 2 },
      async ({ event, step }) =>
        step.run("call", () => {
          const n = note(`later:${event.id}`);
          if (n === 1) throw new RetryAfterError("busy", new Date(Number(event.data["at"])));
          return n;
        }),
    );
    worker = new Worker({
      url: stack.executorUrl,
      functions: [order, sleeper, quick, flaky, fatal, later],
      capacity: 1,
      handleSignals: false,
      maxReconnectDelayMs: 500,
    });
    await worker.connect();
  });

  afterAll(async () => {
    await worker?.close();
    await stack.stop();
  });

  it("waitForEvent ignores a non-matching event, resumes with the matching one, and gives null at the timeout", async () => {
    const [matched] = await client.send({ name: "order.placed", data: { orderId: "o-1", timeout: "20s" } });
    const [unmatched] = await client.send({ name: "order.placed", data: { orderId: "o-2", timeout: "2s" } });
    // Both runs wait (WAITING holds no slot of the one-slot worker).
    await eventually(async () => {
      const runs = await Promise.all([matched!, unmatched!].map(async (id) => (await client.listRunsOfEvent(id))[0]));
      return runs.every((r) => r?.status === "WAITING") ? true : undefined;
    }, 10_000, "both runs to wait");
    await client.send({ name: "shipment.created", data: { orderId: "o-9", n: 1 } });
    await new Promise((r) => setTimeout(r, 300));
    expect((await client.listRunsOfEvent(matched!))[0]?.status).toBe("WAITING");
    const [shipmentId] = await client.send({ name: "shipment.created", data: { orderId: "o-1", n: 2 } });

    const done = await finished(matched!);
    expect(done.status).toBe("COMPLETED");
    expect(done.output).toEqual({ shipment: { id: shipmentId, data: { orderId: "o-1", n: 2 } } });
    const timedOut = await finished(unmatched!);
    expect(timedOut.status).toBe("COMPLETED");
    expect(timedOut.output).toEqual({ shipment: null });
  });

  it("a sleeping run holds no worker slot: a one-slot worker runs other runs meanwhile", async () => {
    const [nap] = await client.send({ name: "nap", data: { ms: 2000 } });
    await eventually(async () => ((await client.listRunsOfEvent(nap!))[0]?.status === "WAITING" ? true : undefined), 10_000);
    const [q] = await client.send({ name: "quick", data: {} });
    const quickRun = await finished(q!);
    const napRun = await finished(nap!);
    expect(quickRun.status).toBe("COMPLETED");
    expect(napRun.status).toBe("COMPLETED");
    // The quick run finished while the other slept.
    expect(quickRun.endedAt!.getTime()).toBeLessThan(napRun.endedAt!.getTime() - 500);
    expect((napRun.output as { slept: number }).slept).toBeGreaterThanOrEqual(2000);
    expect(napRun.steps.map((s) => s.key)).toEqual(["before:0", "nap:0", "after:0"]);
  });

  it("a step that fails twice then succeeds: three attempts journaled, spaced by the backoff", async () => {
    const [id] = await client.send({ name: "flaky", data: {} });
    const run = await finished(id!);
    expect(run.status).toBe("COMPLETED");
    expect(run.output).toEqual({ attempt: 3 });
    expect(run.failedAttempts.map((a) => [a.key, a.attempt, a.error?.message])).toEqual([
      ["call:0", 1, "attempt 1 failed"],
      ["call:0", 2, "attempt 2 failed"],
    ]);
    expect(run.steps).toHaveLength(1);
    expect(run.steps[0]).toMatchObject({ key: "call:0", attempt: 3, output: { attempt: 3 } });
    const times = attempts.get(`flaky:${id}`)!;
    expect(times).toHaveLength(3);
    // base 300 ms, factor 2, no jitter: 300 ms then 600 ms.
    expect(times[1]! - times[0]!).toBeGreaterThanOrEqual(290);
    expect(times[2]! - times[1]!).toBeGreaterThanOrEqual(590);
  });

  it("NonRetriableError fails the run after one attempt, and onFailure runs once for it", async () => {
    const [id] = await client.send({ name: "fatal", data: { mode: "non-retriable", orderId: "o-77" } });
    const run = await finished(id!, "fatal");
    expect(run.status).toBe("FAILED");
    expect(run.error?.name).toBe("StepError");
    expect(run.error?.cause).toMatchObject({ name: "NonRetriableError", message: "card refused" });
    expect(attempts.get(`fatal:${id}`)).toHaveLength(1);
    await eventually(async () => (failureRuns.some((f) => f.failedRunId === run.id) ? true : undefined), 15_000, "onFailure");
    await new Promise((r) => setTimeout(r, 500));
    const mine = failureRuns.filter((f) => f.failedRunId === run.id);
    expect(mine).toHaveLength(1);
    expect(mine[0]).toMatchObject({ orderId: "o-77" });
    expect(mine[0]!.error).toContain("card refused");
  });

  it("retries exhausted and uncaught: FAILED after retries + 1 attempts; caught StepError: the run completes", async () => {
    const [failing] = await client.send({ name: "fatal", data: { mode: "throw" } });
    const [caught] = await client.send({ name: "fatal", data: { mode: "catch" } });
    const failed = await finished(failing!, "fatal");
    expect(failed.status).toBe("FAILED");
    expect(attempts.get(`fatal:${failing}`)).toHaveLength(3);
    expect(failed.failedAttempts).toHaveLength(2);
    const handled = await finished(caught!, "fatal");
    expect(handled.status).toBe("COMPLETED");
    expect(handled.output).toEqual({ handled: 'step "charge" failed: gateway down' });
  });

  it("RetryAfterError delays the next attempt to the given time", async () => {
    const at = Date.now() + 2_000;
    const [id] = await client.send({ name: "later", data: { at } });
    const run = await finished(id!);
    expect(run.status).toBe("COMPLETED");
    const times = attempts.get(`later:${id}`)!;
    expect(times).toHaveLength(2);
    expect(times[1]!).toBeGreaterThanOrEqual(at - 50);
    expect(times[1]! - at).toBeLessThan(1_500);
    expect(run.failedAttempts[0]?.retryAt?.getTime()).toBe(at);
  });
});
