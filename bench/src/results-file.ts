import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus, loadavg, totalmem } from "node:os";
import { dirname, join } from "node:path";
import type { BenchOptions, WorkloadName } from "./bench-options.js";
import type { WorkloadReport } from "./workload-runner.js";

/** Version of the results format; bumped when a field changes meaning. */
export const RESULTS_FORMAT = "stepwise-bench/1";

/** A benchmark run as written to JSON, to compare across commits. */
export interface BenchResults {
  format: typeof RESULTS_FORMAT;
  startedAt: string;
  finishedAt: string;
  git: { commit: string | null; dirty: boolean | null };
  machine: { cpus: number; cpuModel: string; memoryGiB: number; node: string; loadAverage1m: number };
  options: Omit<BenchOptions, "out" | "save" | "keepLogs">;
  workloads: Partial<Record<WorkloadName, WorkloadReport>>;
  /**
   * Ratios of figures of two workloads of this run, such as
   * "W5/W1.runsPerSecond" (the medians' ratio), when both ran.
   */
  ratios?: Record<string, number>;
  /** Workloads not run, and why. */
  skipped: { name: WorkloadName; reason: string }[];
  /** Whether every run of every workload was verified. */
  ok: boolean;
  /** The error that stopped the run, if one did. */
  error?: string;
}

/** Where the repository is: two levels above bench/dist. */
export const REPO_ROOT = join(dirname(new URL(import.meta.url).pathname), "..", "..");

/** The commit and machine a run is measured on. */
export function describeEnvironment(): Pick<BenchResults, "git" | "machine"> {
  const git = (args: string[]) => {
    try {
      return execFileSync("git", args, { cwd: REPO_ROOT, encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
    } catch {
      return null;
    }
  };
  const commit = git(["rev-parse", "HEAD"]);
  const status = git(["status", "--porcelain", "--untracked-files=no"]);
  return {
    git: { commit, dirty: status === null ? null : status.length > 0 },
    machine: {
      cpus: cpus().length,
      cpuModel: cpus()[0]?.model ?? "unknown",
      memoryGiB: Math.round(totalmem() / 2 ** 30),
      node: process.version,
      loadAverage1m: loadavg()[0] ?? 0,
    },
  };
}

/** Writes results (of `npm run bench` or `bench:peers`) as JSON to each path, creating folders as needed. */
export function writeResults(results: object, paths: readonly string[]): void {
  const text = `${JSON.stringify(results, null, 2)}\n`;
  for (const path of paths) {
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, text);
  }
}

/** bench/results/<prefix><timestamp>.json for a run started at `at`. */
export function defaultResultsPath(at: Date, prefix = ""): string {
  return join(REPO_ROOT, "bench", "results", `${prefix}${at.toISOString().replace(/[:.]/g, "-")}.json`);
}
