// The benchmark harness at smoke size: it deploys the engine as separate
// processes, drives W1-W8 with a handful of runs and must verify every one.
// Nothing here asserts on timings: CI machines are too noisy for that.
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { DEFAULT_DATABASE_URL, NATS_URL } from "./support/stack.js";

const MAIN = fileURLToPath(new URL("../bench/dist/main.js", import.meta.url));

/** The fields of bench/results JSON this test reads. */
interface SmokeResults {
  ok: boolean;
  workloads: Record<
    string,
    {
      ok: boolean;
      figures: Record<string, number>;
      repetitions: { verification: { expected: number; verified: number; lost: number; wrong: number; journal: string[] } }[];
    }
  >;
}

describe("bench harness (smoke size)", () => {
  const dir = mkdtempSync(join(tmpdir(), "bench-smoke-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("runs W1-W8 on the real stack, exits 0 and verifies every run", async () => {
    const out = join(dir, "results.json");
    const args = [
      MAIN,
      "--workloads", "W1,W2,W3,W4,W5,W6,W7,W8",
      "--runs", "100", "--inflight", "20",
      "--steps", "10", "--step-reps", "2",
      "--latency-runs", "20",
      "--sleepers", "20", "--sleep", "2s",
      "--fan-out", "50", "--fan-out-reps", "2",
      "--long-steps", "300", "--long-sleep", "1s",
      "--grown-runs", "5000",
      "--database-url", DEFAULT_DATABASE_URL, "--nats-url", NATS_URL,
      "--no-save", "--out", out,
    ];
    const { code, output } = await run(args);
    expect(code, output).toBe(0);

    const results = JSON.parse(readFileSync(out, "utf8")) as SmokeResults;
    expect(results.ok).toBe(true);
    expect(Object.keys(results.workloads)).toEqual(["W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8"]);
    // W8 measures W1's runs and W3's again, on a journal grown by 5,000 ended runs.
    const expected: Record<string, number> = { W1: 100, W2: 2, W3: 20, W4: 20, W5: 100, W6: 2, W7: 1, W8: 120 };
    for (const [name, w] of Object.entries(results.workloads)) {
      expect(w.ok, name).toBe(true);
      for (const { verification: v } of w.repetitions) {
        expect(v, name).toMatchObject({ expected: expected[name], verified: expected[name], lost: 0, wrong: 0, journal: [] });
      }
    }
    expect(results.workloads["W1"]!.figures["runsPerSecond"]).toBeGreaterThan(0);
    expect(results.workloads["W6"]!.figures["runMsP50"]).toBeGreaterThan(0);
    expect(results.workloads["W7"]!.figures["journalEntries"]).toBe(304);
    expect(results.workloads["W7"]!.figures["replayMs"]).toBeGreaterThanOrEqual(0);
    expect(Object.keys(results.workloads["W7"]!.figures)).toEqual(expect.arrayContaining(["rssGrowthMiB.worker", "rssGrowthMiB.executor"]));
    expect(results.workloads["W8"]!.figures["runsPerSecond"]).toBeGreaterThan(0);
    expect(results.workloads["W8"]!.figures["latencyP50Ms"]).toBeGreaterThan(0);
  }, 180_000);

  it("runs W1-W3 on the embedded engine (--embedded: stepwise dev alone), exits 0 and verifies every run", async () => {
    const out = join(dir, "embedded.json");
    const args = [MAIN, "--embedded", "--runs", "60", "--inflight", "20", "--steps", "10", "--step-reps", "2", "--latency-runs", "10", "--no-save", "--out", out];
    const { code, output } = await run(args);
    expect(code, output).toBe(0);
    const results = JSON.parse(readFileSync(out, "utf8")) as SmokeResults & { workloads: Record<string, { usage: Record<string, unknown> }> };
    expect(results.ok).toBe(true);
    expect(Object.keys(results.workloads)).toEqual(["W1", "W2", "W3"]);
    const expected: Record<string, number> = { W1: 60, W2: 2, W3: 10 };
    for (const [name, w] of Object.entries(results.workloads)) {
      for (const { verification: v } of w.repetitions) expect(v, name).toMatchObject({ expected: expected[name], verified: expected[name], lost: 0, wrong: 0 });
      // One engine process, no services.
      expect(Object.keys(w.usage).sort(), name).toEqual(["client", "dev", "worker"]);
    }
    expect(output).toContain("embedded engine");
  }, 180_000);
});

function run(args: string[]): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    p.stdout.on("data", (d: Buffer) => (output += d.toString()));
    p.stderr.on("data", (d: Buffer) => (output += d.toString()));
    p.on("exit", (c) => resolve({ code: c, output }));
  });
}
