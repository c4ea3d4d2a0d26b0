// The chaos suite for 60 s: a private three-node NATS cluster and Postgres,
// two executors, schedulers and ingests and two worker processes, events
// sent steadily while processes are killed, frozen and restarted at random
// (a fixed seed). It must inject faults of several kinds, get events
// accepted, and pass every check: no accepted event lost, every run
// completed, each step journaled once, no duplicate body execution without
// a fault, recovery within the bound of each fault, no process dying on its
// own. See docs/reliability.md.
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";

const MAIN = fileURLToPath(new URL("../bench/dist/chaos/main.js", import.meta.url));

/** The fields of the chaos suite's JSON this test reads. */
interface ChaosResults {
  ok: boolean;
  figures: {
    eventsAccepted: number;
    runs: number;
    runsCompleted: number;
    faultsByKind: Record<string, number>;
    duplicates: { unexplained: number };
  };
  checks: Array<{ name: string; ok: boolean; summary: string; problems: string[] }>;
  crashes: unknown[];
}

describe("chaos suite (60 s smoke)", () => {
  const dir = mkdtempSync(join(tmpdir(), "chaos-smoke-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("injects faults of several kinds and passes every check", async () => {
    const out = join(dir, "chaos.json");
    const args = [MAIN, "--duration", "60s", "--seed", "7", "--fault-rate", "12", "--settle", "45s", "--out", out];
    const { code, output } = await new Promise<{ code: number | null; output: string }>((resolve) => {
      const p = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"] });
      let output = "";
      p.stdout.on("data", (d: Buffer) => (output += d.toString()));
      p.stderr.on("data", (d: Buffer) => (output += d.toString()));
      p.on("exit", (c) => resolve({ code: c, output }));
    });
    expect(code, output).toBe(0);

    const results = JSON.parse(readFileSync(out, "utf8")) as ChaosResults;
    const kinds = Object.keys(results.figures.faultsByKind);
    expect(kinds.length, `fault kinds injected: ${kinds.join(", ")}`).toBeGreaterThanOrEqual(3);
    expect(results.figures.eventsAccepted).toBeGreaterThan(0);
    expect(results.figures.runsCompleted).toBe(results.figures.runs);
    expect(results.figures.duplicates.unexplained).toBe(0);
    expect(results.crashes).toEqual([]);
    for (const c of results.checks) expect(c.ok, `${c.name}: ${c.summary}\n${c.problems.join("\n")}`).toBe(true);
    expect(results.checks.length).toBeGreaterThanOrEqual(7);
    expect(results.ok).toBe(true);
  }, 240_000);
});
