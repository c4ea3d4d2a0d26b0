import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Stepwise, Worker, type StepwiseFunction } from "@stepwise/sdk";
import { Stack, eventually, gate } from "./support/stack.js";

describe("a worker that disconnects mid-step", () => {
  const stack = new Stack();
  const workers: Worker[] = [];

  beforeAll(async () => {
    await stack.start();
  });

  afterAll(async () => {
    await Promise.all(workers.map((w) => w.kill()));
    await stack.stop();
  });

  it("has its run handed to another connected worker, which completes it", async () => {
    const client = new Stepwise({ appId: "handover", url: stack.ingestUrl });
    const ranOn: { a: string[]; b: string[] } = { a: [], b: [] };
    const entered = gate<string>();
    const never = new Promise<never>(() => {});
    // The same function served by two workers; each copy records where it ran.
    const define = (name: "a" | "b"): StepwiseFunction =>
      client.createFunction({ id: "handover", triggers: [{ event: "handover.go" }] }, async ({ step }) => {
        await step.run("first", () => {
          ranOn[name].push("first");
          return name;
        });
        await step.run("slow", async () => {
          ranOn[name].push("slow");
          if (ranOn.a.includes("slow") !== ranOn.b.includes("slow")) {
            // First execution of this step anywhere: hang until the worker is killed.
            entered.open(name);
            return never;
          }
          return `finished on ${name}`;
        });
        return name;
      });
    const a = new Worker({ url: stack.executorUrl, functions: [define("a")], handleSignals: false });
    const b = new Worker({ url: stack.executorUrl, functions: [define("b")], handleSignals: false });
    workers.push(a, b);
    await Promise.all([a.connect(), b.connect()]);

    const [eventId] = await client.send({ name: "handover.go", data: {} });
    const first = await entered.promise;
    await (first === "a" ? a : b).kill();
    const other = first === "a" ? "b" : "a";

    const run = await eventually(async () => {
      const [r] = await client.listRunsOfEvent(eventId!);
      return r?.status === "COMPLETED" ? client.getRun(r.id) : undefined;
    }, 20_000, "the run to complete on the other worker");
    expect(run.output).toBe(other);
    // The step journaled before the disconnect did not run again.
    expect([...ranOn.a, ...ranOn.b].filter((s) => s === "first")).toHaveLength(1);
    expect(ranOn[other]).toContain("slow");
    expect(run.steps.map((s) => s.id)).toEqual(["first", "slow"]);
    expect(run.steps[1]!.output).toBe(`finished on ${other}`);
  });
});
