import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Stepwise, Worker } from "@stepwise/sdk";
import { Stack, eventually, gate } from "./support/stack.js";

// Throttles and priorities on the real stack: ingest, two schedulers and
// an executor as separate processes, real NATS JetStream and Postgres.
describe("throttle and priority", () => {
  const stack = new Stack();
  let client: Stepwise;
  let worker: Worker;
  const throttledStarts: number[] = [];
  const priorityOrder: string[] = [];
  let blockerStarted = gate();
  let releaseBlocker = gate();

  beforeAll(async () => {
    await stack.start();
    await stack.startExtra("scheduler");
    client = new Stepwise({ appId: "pace", url: stack.ingestUrl });
    const throttled = client.createFunction(
      { id: "throttled", triggers: [{ event: "paced.go" }], throttle: { limit: 5, period: "1s" } },
      async ({ step }) => {
        await step.run("start", () => throttledStarts.push(Date.now()));
      },
    );
    const prioritized = client.createFunction(
      { id: "prioritized", triggers: [{ event: "prio.go" }], concurrency: 1, priority: { run: "event.data.p" } },
      async ({ event, step }) => {
        const name = String(event.data["name"]);
        await step.run("start", async () => {
          priorityOrder.push(name);
          if (name === "blocker") {
            blockerStarted.open();
            await releaseBlocker.promise;
          }
        });
      },
    );
    worker = new Worker({ url: stack.executorUrl, functions: [throttled, prioritized], capacity: 50, handleSignals: false });
    await worker.connect();
  });

  afterAll(async () => {
    await worker?.close();
    client?.close();
    await stack.stop();
  });

  it("30 runs with limit 5 per second: 5 start at once, then one every 200 ms; none is dropped", async () => {
    const ids = await client.send(Array.from({ length: 30 }, (_, i) => ({ name: "paced.go", data: { i } })));
    await eventually(
      async () => {
        const results = await Promise.all(ids.map((id) => client.waitForRuns(id, { timeoutMs: 1_000 })));
        return results.every((r) => r.done && r.runs[0]?.status === "COMPLETED") ? true : undefined;
      },
      30_000,
      "every throttled run to complete",
    );
    expect(throttledStarts).toHaveLength(30);
    const starts = [...throttledStarts].sort((a, b) => a - b);
    // Tolerance: 300 ms for the way from a grant to the step body (publish,
    // claim, dispatch), which differs from one run to the next: on a loaded
    // machine the first run's took 170 ms more than a later one's. An
    // ignored throttle (30 starts at once) or a doubled rate (a span of 2.5 s)
    // still fails by seconds.
    const TOLERANCE_MS = 300;
    // The generic cell rate: a start every period / limit (200 ms), up to
    // limit + burst (5) at once. So the first 5 start at once; the i-th
    // after them no sooner than i × 200 ms after the first; and no 6 starts
    // fall within less than 200 ms (two may start together when a round
    // came late and the rate had room for both).
    expect(starts[4]! - starts[0]!).toBeLessThan(500);
    for (let i = 5; i < starts.length; i++) {
      expect(starts[i]! - starts[0]!, `start ${i}`).toBeGreaterThanOrEqual((i - 4) * 200 - TOLERANCE_MS);
      expect(starts[i]! - starts[i - 5]!, `starts ${i - 5} to ${i}`).toBeGreaterThanOrEqual(200 - TOLERANCE_MS);
    }
    // Paced, and not much slower than the rate.
    const span = starts[29]! - starts[0]!;
    expect(span).toBeGreaterThanOrEqual(25 * 200 - TOLERANCE_MS);
    expect(span).toBeLessThan(25 * 200 + 2_000);
  }, 60_000);

  it("a run with a higher priority starts before older ones waiting for the same slot", async () => {
    blockerStarted = gate();
    releaseBlocker = gate();
    const [blocker] = await client.send({ name: "prio.go", data: { name: "blocker", p: 0 } });
    await blockerStarted.promise;
    const low: string[] = [];
    for (const name of ["low-1", "low-2", "low-3"]) low.push(...(await client.send({ name: "prio.go", data: { name, p: 0 } })));
    const [high] = await client.send({ name: "prio.go", data: { name: "high", p: 60 } });
    // Every one of them is waiting for the slot before it frees.
    await eventually(
      async () => {
        const rows = await stack.query("SELECT count(*)::int AS n FROM runs WHERE function_id = 'prioritized' AND slot = 'waiting'");
        return (rows[0] as { n: number }).n === 4 ? true : undefined;
      },
      10_000,
      "four runs waiting for the slot",
    );
    releaseBlocker.open();
    for (const id of [blocker!, ...low, high!]) {
      const { runs } = await client.waitForRuns(id, { timeoutMs: 20_000 });
      expect(runs[0]?.status).toBe("COMPLETED");
    }
    // The high one first; the low ones after it (the events of one scheduler
    // batch are created in one statement, at one time, in no order).
    expect(priorityOrder.slice(0, 2)).toEqual(["blocker", "high"]);
    expect(priorityOrder.slice(2).sort()).toEqual(["low-1", "low-2", "low-3"]);
  });
});
