import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Stepwise, Worker } from "@stepwise/sdk";
import { Stack, eventually } from "./support/stack.js";

describe("worker slots and apps", () => {
  const stack = new Stack();
  const workers: Worker[] = [];

  beforeAll(async () => {
    await stack.start();
  });

  afterAll(async () => {
    await Promise.all(workers.map((w) => w.close()));
    await stack.stop();
  });

  it("never gives a worker more runs at once than its capacity, and every run completes", async () => {
    const client = new Stepwise({ appId: "slots", url: stack.ingestUrl });
    let active = 0;
    let peak = 0;
    const fn = client.createFunction({ id: "slow", triggers: [{ event: "slots.go" }] }, async ({ step }) => {
      active++;
      peak = Math.max(peak, active);
      try {
        await step.run("wait", () => new Promise((r) => setTimeout(() => r("ok"), 100)));
        return "done";
      } finally {
        active--;
      }
    });
    const worker = new Worker({ url: stack.executorUrl, functions: [fn], capacity: 2, handleSignals: false });
    workers.push(worker);
    await worker.connect();
    const ids = await client.send(Array.from({ length: 8 }, (_, i) => ({ name: "slots.go", data: { i } })));
    await eventually(async () => {
      const runs = await Promise.all(ids.map((id) => client.listRunsOfEvent(id)));
      return runs.every((r) => r[0]?.status === "COMPLETED") ? true : undefined;
    }, 20_000, "all 8 runs to complete");
    expect(peak).toBe(2);
  });

  it("gives each app's runs only to that app's workers", async () => {
    // Two apps define a function with the same id on the same event.
    const seen: Array<{ worker: string; app: string }> = [];
    const define = (appId: string) => {
      const c = new Stepwise({ appId, url: stack.ingestUrl });
      return c.createFunction({ id: "same-id", triggers: [{ event: "shared.event" }] }, async ({ runId, step }) => {
        await step.run("where", () => appId);
        const run = await c.getRun(runId);
        seen.push({ worker: appId, app: run.appId });
        return appId;
      });
    };
    const w1 = new Worker({ url: stack.executorUrl, functions: [define("app-one")], handleSignals: false });
    const w2 = new Worker({ url: stack.executorUrl, functions: [define("app-two")], handleSignals: false });
    workers.push(w1, w2);
    await Promise.all([w1.connect(), w2.connect()]);

    const client = new Stepwise({ appId: "sender", url: stack.ingestUrl });
    const ids = await client.send(Array.from({ length: 5 }, (_, i) => ({ name: "shared.event", data: { i } })));
    const runs = await eventually(async () => {
      const all = (await Promise.all(ids.map((id) => client.listRunsOfEvent(id)))).flat();
      return all.length === 10 && all.every((r) => r.status === "COMPLETED") ? all : undefined;
    }, 20_000, "10 runs (5 events x 2 apps) to complete");
    for (const r of runs) expect(r.output).toBe(r.appId);
    expect(seen).toHaveLength(10);
    for (const s of seen) expect(s.worker).toBe(s.app);
  });
});
