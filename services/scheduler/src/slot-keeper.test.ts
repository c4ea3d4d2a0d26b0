import { compileExpression, type UnkeyedRun } from "@stepwise/core";
import { describe, expect, it } from "vitest";
import { runKeys } from "./slot-keeper.js";

// What the slot keeper makes of a run of a function with flow control.

const compile = (source: string) => compileExpression(source, ["event"]);

function run(data: unknown, flow: Partial<UnkeyedRun["flow"]>): UnkeyedRun {
  return {
    runId: "r1",
    appId: "shop",
    functionId: "charge",
    event: { id: "e1", name: "order.placed", dataJson: JSON.stringify(data), tsMs: 0 },
    flow: { concurrency: [], throttle: null, priority: null, admission: null, ...flow },
    createdAtMs: 1_000_000,
    admitted: false,
  };
}

describe("runKeys", () => {
  it("makes one key per concurrency limit from its scope and the value of its expression", () => {
    const keys = runKeys(
      run({ customer: "c-1", region: 7 }, {
        concurrency: [
          { limit: 3, key: "event.data.customer", scope: "function" },
          { limit: 10, key: "event.data.region", scope: "app" },
        ],
      }),
      compile,
    );
    expect(keys).toEqual({ runId: "r1", keys: ["fn:shop/charge#0:c-1", "app:shop:7"], throttleKey: undefined, queuedAtMs: 1_000_000 });
  });

  it("gives the empty value to a key without an expression or one that fails, and hashes a long one", () => {
    const keys = runKeys(
      run({ long: "x".repeat(500) }, {
        concurrency: [
          { limit: 1, key: "", scope: "function" },
          { limit: 1, key: "event.data.missing.deeper", scope: "function" },
        ],
        throttle: { limit: 1, periodMs: 1_000, burst: 0, key: "event.data.long" },
      }),
      compile,
    );
    expect(keys.keys).toEqual(["fn:shop/charge#0:", "fn:shop/charge#1:"]);
    expect(keys.throttleKey).toMatch(/^throttle:shop\/charge:sha256:[0-9a-f]{64}$/);
  });

  it("moves a run ahead by its priority in seconds, clamped to 600, and keeps its place when it fails", () => {
    expect(runKeys(run({ p: 30 }, { priority: "event.data.p" }), compile).queuedAtMs).toBe(1_000_000 - 30_000);
    expect(runKeys(run({ p: -5000 }, { priority: "event.data.p" }), compile).queuedAtMs).toBe(1_000_000 + 600_000);
    expect(runKeys(run({}, { priority: "event.data.p" }), compile).queuedAtMs).toBe(1_000_000);
    expect(runKeys(run({ vip: true }, { priority: "event.data.vip ? 120 : 0" }), compile).queuedAtMs).toBe(1_000_000 - 120_000);
  });
});
