import { describe, expect, it } from "vitest";
import { MemoryBus } from "./memory-bus.js";
import { MAX_RUNS_PER_WORK, WorkPublisher, workMessages, workRunIds } from "./run-work.js";

const run = (i: number, functionId = "f", appId = "app") => ({ runId: `r${i}`, appId, functionId });

describe("workMessages", () => {
  it("groups runs by app and function, in order, at most MAX_RUNS_PER_WORK a message", () => {
    const runs = [...Array.from({ length: MAX_RUNS_PER_WORK + 3 }, (_, i) => run(i)), run(100, "g"), run(101, "f", "other")];
    const messages = workMessages(runs);
    expect(messages.map((m) => [m.appId, m.functionId, workRunIds(m).length])).toEqual([
      ["app", "f", MAX_RUNS_PER_WORK],
      ["app", "f", 3],
      ["app", "g", 1],
      ["other", "f", 1],
    ]);
    expect(messages.flatMap(workRunIds)).toEqual(runs.map((r) => r.runId));
    expect(workMessages([])).toEqual([]);
  });
});

describe("WorkPublisher", () => {
  it("publishes the runs submitted in one turn in one message per function", async () => {
    const bus = new MemoryBus();
    const publisher = new WorkPublisher(bus);
    await Promise.all([publisher.publish([run(1)]), publisher.publish([run(2), run(3, "g")]), publisher.publish([])]);
    await publisher.publish([run(4)]);
    const got: string[][] = [];
    for await (const d of bus.pullWork("app", 10, 50, new AbortController().signal)) {
      got.push(workRunIds(d.data));
      d.ack();
    }
    expect(got).toEqual([["r1", "r2"], ["r3"], ["r4"]]);
    await bus.close();
  });
});
