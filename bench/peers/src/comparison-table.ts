import { median } from "../../dist/percentiles.js";
import type { BenchResults } from "../../dist/results-file.js";
import type { ProcessUsage, WindowUsage } from "../../dist/usage-window.js";
import type { PeerResults, PeerWorkloadName } from "./peer-runner.js";

/** A figure compared across systems, and which way is better. */
interface ComparedFigure {
  workload: PeerWorkloadName;
  key: string;
  label: string;
  higherIsBetter: boolean;
}

/** The figures `npm run bench:peers` compares. */
export const COMPARED: readonly ComparedFigure[] = [
  { workload: "W1", key: "runsPerSecond", label: "W1 runs/s", higherIsBetter: true },
  { workload: "W1", key: "stepsPerSecond", label: "W1 steps/s", higherIsBetter: true },
  { workload: "W1", key: "latencyP50Ms", label: "W1 latency p50 (ms)", higherIsBetter: false },
  { workload: "W1", key: "latencyP99Ms", label: "W1 latency p99 (ms)", higherIsBetter: false },
  { workload: "W2", key: "msPerStepP50", label: "W2 ms per step (p50)", higherIsBetter: false },
  { workload: "W3", key: "latencyP50Ms", label: "W3 latency p50 (ms)", higherIsBetter: false },
  { workload: "W3", key: "latencyP99Ms", label: "W3 latency p99 (ms)", higherIsBetter: false },
];

/** Stepwise's figure divided by a peer's, for each compared figure and peer. */
export type Ratios = Record<string, Record<string, number>>;

/** Stepwise / peer for every compared figure. */
export function ratios(stepwise: BenchResults | undefined, peers: readonly PeerResults[]): Ratios {
  const out: Ratios = {};
  for (const peer of peers) {
    out[peer.peer] = Object.fromEntries(
      COMPARED.map((f) => [`${f.workload}.${f.key}`, figure(stepwise, f) / peerFigure(peer, f)]),
    );
  }
  return out;
}

/** The comparison as a plain-text table. */
export function formatComparison(stepwise: BenchResults | undefined, peers: readonly PeerResults[], repeat: number): string {
  const header = ["figure", "Stepwise", ...peers.flatMap((p) => [label(p), `Stepwise/${label(p)}`])];
  const rows: string[][] = [header];
  for (const f of COMPARED) {
    const mine = figure(stepwise, f);
    rows.push([
      `${f.label} ${f.higherIsBetter ? "↑" : "↓"}`,
      num(mine),
      ...peers.flatMap((p) => {
        const theirs = peerFigure(p, f);
        return [num(theirs), Number.isFinite(mine / theirs) ? `${(mine / theirs).toFixed(2)}×` : "-"];
      }),
    ]);
  }
  const notes = [
    `medians of ${repeat} measurements each; ↑ higher is better, ↓ lower is better; a ratio above 1 means Stepwise's figure is larger.`,
    ...peers.map((p) => `${label(p)}: ${p.setup}${p.ok ? "" : `; FAILED${p.error ? `: ${p.error}` : ""}`}`),
  ];
  const cost: string[][] = [["W1 CPU ms per run", "system", "client", "Postgres + NATS (shared)"]];
  const runs = stepwise?.options.runs ?? Number.NaN;
  const w1 = stepwise?.workloads.W1;
  if (w1) cost.push(["Stepwise", ...cpuPerRun(w1.usage, w1.repetitions.map((r) => r.usage), runs)]);
  for (const p of peers) {
    const w = p.workloads.W1;
    if (w) cost.push([label(p), ...cpuPerRun(w.usage, w.repetitions.map((r) => r.usage), runs)]);
  }
  return [...align(rows), "", ...align(cost), "", ...notes].join("\n");
}

/** CPU ms per run of the system's own processes, of its client, and of the shared servers (medians). */
function cpuPerRun(usage: Record<string, ProcessUsage>, windows: readonly WindowUsage[], runs: number): string[] {
  const own = Object.entries(usage)
    .filter(([name]) => name !== "client")
    .reduce((a, [, u]) => a + u.cpuSeconds, 0);
  const shared = median(windows.map((w) => (w.shared["postgres"] ?? 0) + (w.shared["nats"] ?? 0)));
  return [own, usage["client"]?.cpuSeconds ?? Number.NaN, shared].map((s) => num((1000 * s) / runs));
}

function align(rows: readonly string[][]): string[] {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return rows.map((r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  "));
}

function label(p: PeerResults): string {
  return `${p.peer === "dbos" ? "DBOS" : p.peer === "restate" ? "Restate" : p.peer} ${p.version}`;
}

function figure(results: BenchResults | undefined, f: ComparedFigure): number {
  return results?.workloads[f.workload]?.figures[f.key] ?? Number.NaN;
}

function peerFigure(peer: PeerResults, f: ComparedFigure): number {
  return peer.workloads[f.workload]?.figures[f.key] ?? Number.NaN;
}

function num(n: number): string {
  if (!Number.isFinite(n)) return "-";
  return Math.abs(n) >= 100 ? n.toFixed(0) : Math.abs(n) >= 10 ? n.toFixed(1) : n.toFixed(2);
}
