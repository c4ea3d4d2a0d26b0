import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Stepwise, Worker } from "@stepwise/sdk";
import { Stack, eventually, gate } from "./support/stack.js";

// Durable before proceed: an executor killed with SIGKILL while step 3 runs
// loses nothing and re-runs nothing that was journaled.
describe("executor killed mid-run", () => {
  const stack = new Stack();
  let worker: Worker | undefined;

  beforeAll(async () => {
    await stack.start();
  });

  afterAll(async () => {
    await worker?.kill();
    await stack.stop();
  });

  it("completes the run after a restart; steps 1-2 never run again, step 3 at most twice, each journaled once", async () => {
    const client = new Stepwise({ appId: "crash", url: stack.ingestUrl });
    const counts = { s1: 0, s2: 0, s3: 0, s4: 0 };
    const step3Entered = gate();
    const firstStep3 = gate<string>();
    const fn = client.createFunction({ id: "four-steps", triggers: [{ event: "go" }] }, async ({ step }) => {
      await step.run("s1", () => ++counts.s1);
      await step.run("s2", () => ++counts.s2);
      await step.run("s3", async () => {
        const n = ++counts.s3;
        if (n === 1) {
          step3Entered.open();
          // Held open until the executor is dead; its result then has nowhere to go.
          return firstStep3.promise;
        }
        return `second-${n}`;
      });
      await step.run("s4", () => ++counts.s4);
      return "done";
    });
    worker = new Worker({ url: stack.executorUrl, functions: [fn], handleSignals: false, maxReconnectDelayMs: 300 });
    await worker.connect();

    const [eventId] = await client.send({ name: "go", data: {} });
    await step3Entered.promise;
    const runId = (await client.listRunsOfEvent(eventId!))[0]!.id;
    const journaled = await stack.query<{ step_id: string }>("SELECT step_id FROM steps WHERE run_id = $1 ORDER BY seq", [runId]);
    expect(journaled.map((r) => r.step_id)).toEqual(["s1", "s2"]);

    await stack.kill("executor", "SIGKILL");
    firstStep3.open("first");
    await stack.startService("executor");

    const run = await eventually(async () => {
      const r = await client.getRun(runId);
      return r.status === "COMPLETED" ? r : undefined;
    }, 30_000, "the run to complete after the executor restart");

    expect(run.output).toBe("done");
    expect(counts.s1).toBe(1);
    expect(counts.s2).toBe(1);
    expect(counts.s3).toBeGreaterThanOrEqual(1);
    expect(counts.s3).toBeLessThanOrEqual(2);
    expect(counts.s4).toBe(1);
    const rows = await stack.query<{ step_id: string; n: string }>(
      "SELECT step_id, count(*) AS n FROM steps WHERE run_id = $1 GROUP BY step_id ORDER BY min(seq)",
      [runId],
    );
    expect(rows.map((r) => [r.step_id, Number(r.n)])).toEqual([["s1", 1], ["s2", 1], ["s3", 1], ["s4", 1]]);
    expect(run.attempts).toBeGreaterThanOrEqual(2);
  });

  it("on SIGTERM drains: the run in progress finishes in place and the executor exits 0", async () => {
    const client = new Stepwise({ appId: "graceful", url: stack.ingestUrl });
    let runs = 0;
    const inStep = gate();
    const fn = client.createFunction({ id: "graceful", triggers: [{ event: "graceful.go" }] }, async ({ step }) => {
      await step.run("slow", async () => {
        runs++;
        inStep.open();
        await new Promise((r) => setTimeout(r, 700));
        return "slow";
      });
      return "done";
    });
    const w = new Worker({ url: stack.executorUrl, functions: [fn], handleSignals: false, maxReconnectDelayMs: 300 });
    await w.connect();
    try {
      const [eventId] = await client.send({ name: "graceful.go", data: {} });
      await inStep.promise;
      const executor = stack.procs.get("executor")!;
      const exited = new Promise<number | null>((r) => executor.once("exit", (code) => r(code)));
      executor.kill("SIGTERM");
      expect(await exited).toBe(0);
      const [run] = await client.listRunsOfEvent(eventId!);
      expect(run?.status).toBe("COMPLETED");
      expect(run!.attempts).toBe(1);
      expect(runs).toBe(1);
    } finally {
      await w.kill();
      await stack.startService("executor");
    }
  });
});
