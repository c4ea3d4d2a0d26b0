import { median } from "./percentiles.js";
import type { BenchResults } from "./results-file.js";

const LABELS: Record<string, string> = {
  runsPerSecond: "runs/s",
  stepsPerSecond: "steps/s",
  latencyP50Ms: "latency p50 (ms)",
  latencyP99Ms: "latency p99 (ms)",
  peakInFlightPerCustomer: "most in flight of one customer, client",
  peakRunningPerCustomer: "most running of one customer, worker",
  msPerStepP50: "ms per step, client (p50)",
  msPerStepInRunP50: "ms per step, in run (p50)",
  latenessP50Ms: "timer lateness p50 (ms)",
  latenessP99Ms: "timer lateness p99 (ms)",
  latenessMaxMs: "timer lateness max (ms)",
  allAsleepSeconds: "send to all asleep (s)",
  wokeWhileSampling: "runs woken while sampling",
  runMsP50: "Send to run ended, client (ms, p50)",
  runMsInRunP50: "run start to end, in run (ms, p50)",
  msPerStep: "ms per step, in run",
  replayMs: "sleep due to first step after the replay (ms)",
  journalEntries: "journal entries replayed",
  retentionRunsDeletedPerSecond: "runs retention deleted meanwhile (/s)",
};

/** Renders the results as the plain-text tables `npm run bench` prints. */
export function formatResults(results: BenchResults): string {
  const lines: string[] = [];
  const { machine, git, options } = results;
  const commit = git.commit ? `${git.commit.slice(0, 10)}${git.dirty ? " (uncommitted changes)" : ""}` : "unknown commit";
  lines.push(
    `Stepwise bench: ${commit}, ${machine.cpus} cores, Node ${machine.node}; ` +
      (options.repeat > 1 ? `medians of ${options.repeat} measurements` : "one measurement per workload") +
      (options.embedded ? "; embedded engine (stepwise dev: PGlite, in-process bus), runs verified through the API only" : ""),
  );
  const many = options.repeat > 1;
  const figureRows: string[][] = [["workload", "figure", "median", ...(many ? ["min", "max"] : [])]];
  for (const w of Object.values(results.workloads)) {
    let first = true;
    for (const [key, value] of Object.entries(w.figures)) {
      const all = w.repetitions.map((r) => r.figures[key] ?? Number.NaN);
      figureRows.push([
        first ? `${w.name} ${w.title}` : "",
        label(key),
        num(value),
        ...(many ? [num(Math.min(...all)), num(Math.max(...all))] : []),
      ]);
      first = false;
    }
    const v = w.repetitions.map((r) => r.verification);
    const sum = (f: (x: (typeof v)[number]) => number) => v.reduce((a, x) => a + f(x), 0);
    figureRows.push(["", "runs verified", `${sum((x) => x.verified)}/${sum((x) => x.expected)}`]);
    const exceeded = w.repetitions.reduce((a, r) => a + (r.limit?.exceeded.length ?? 0), 0);
    if (w.repetitions.some((r) => r.limit)) {
      figureRows.push(["", `times over the limit (${w.repetitions[0]?.limit?.limit ?? "-"})`, String(exceeded)]);
    }
    if (!w.ok) {
      figureRows.push(["", `FAILED: ${sum((x) => x.lost)} lost, ${sum((x) => x.wrong)} wrong${exceeded > 0 ? `, ${exceeded} over the limit` : ""}`]);
    }
    const runs = Math.max(1, sum((x) => x.expected));
    const calls = (f: (r: (typeof w.repetitions)[number]) => number) => num(w.repetitions.reduce((a, r) => a + f(r), 0) / runs);
    figureRows.push(["", "client reads, Sends per run", `${calls((r) => r.reads)}, ${calls((r) => r.sends)}`]);
  }
  lines.push("", ...table(figureRows));
  const ratio = results.ratios?.["W5/W1.runsPerSecond"];
  if (ratio !== undefined) lines.push(`W5/W1 runs/s: ${ratio.toFixed(2)} (median over median: what the limit per customer costs)`);
  const grown = (k: string) => results.ratios?.[k]?.toFixed(2) ?? "-";
  if (results.workloads.W8 && (results.workloads.W1 || results.workloads.W3)) {
    lines.push(
      `W8 against the journal before it grew: runs/s ${grown("W8/W1.runsPerSecond")} of W1's, ` +
        `latency p50 ${grown("W8/W3.latencyP50Ms")} and p99 ${grown("W8/W3.latencyP99Ms")} of W3's (medians over medians)`,
    );
  }

  const usageRows: string[][] = [["workload", "process", "CPU s", "peak RSS MiB"]];
  for (const w of Object.values(results.workloads)) {
    let first = true;
    for (const [name, u] of Object.entries(w.usage)) {
      usageRows.push([first ? w.name : "", name, num(u.cpuSeconds), num(u.peakRssMiB)]);
      first = false;
    }
    const windows = w.repetitions.map((r) => r.usage);
    const med = (f: (u: (typeof windows)[number]) => number) => num(median(windows.map(f)));
    usageRows.push([
      "",
      "(shared)",
      `postgres ${med((u) => u.shared["postgres"] ?? Number.NaN)}, nats ${med((u) => u.shared["nats"] ?? Number.NaN)}`,
      `machine busy ${med((u) => u.machineBusyCores)} cores`,
    ]);
  }
  lines.push("", "Process usage per measurement (medians; shared: Postgres and NATS, all clients):", ...table(usageRows));
  for (const s of results.skipped) lines.push(`skipped ${s.name}: ${s.reason}`);
  for (const w of Object.values(results.workloads)) {
    for (const r of w.repetitions) {
      for (const p of [...r.verification.problems, ...r.verification.journal]) lines.push(`${w.name}: ${p}`);
      for (const p of r.limit?.exceeded ?? []) lines.push(`${w.name}: concurrency limit exceeded: ${p}`);
    }
  }
  if (results.error) lines.push(`error: ${results.error}`);
  lines.push(results.ok ? "every run verified" : "FAILED: some runs were lost or wrong, a concurrency limit was exceeded, or the run stopped");
  return lines.join("\n");
}

function label(key: string): string {
  if (key.startsWith("addedRssMiB.")) return `added RSS while asleep, ${key.slice("addedRssMiB.".length)} (MiB)`;
  if (key.startsWith("peakRssMiB.")) return `peak RSS, ${key.slice("peakRssMiB.".length)} (MiB)`;
  if (key.startsWith("rssGrowthMiB.")) return `RSS growth from 20% to 90% of the steps, ${key.slice("rssGrowthMiB.".length)} (MiB)`;
  return LABELS[key] ?? key;
}

function num(n: number): string {
  if (!Number.isFinite(n)) return "-";
  if (Math.abs(n) >= 100) return n.toFixed(0);
  if (Math.abs(n) >= 10) return n.toFixed(1);
  return n.toFixed(2);
}

function table(rows: readonly string[][]): string[] {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return rows.map((r) =>
    r
      .map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!)))
      .join("  ")
      .trimEnd(),
  );
}
