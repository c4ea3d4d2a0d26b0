// `npm run bench:peers`: W1–W3 on Stepwise (through `npm run bench`'s
// harness), on Restate (inside a loopback-only network namespace) and on
// DBOS Transact, with the same function shapes; prints each figure and the
// ratio Stepwise/peer, and writes JSON. Exits non-zero if a system lost or
// got a run wrong.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import type { BenchResults } from "../../dist/results-file.js";
import { defaultResultsPath, describeEnvironment, REPO_ROOT, writeResults } from "../../dist/results-file.js";
import { formatComparison, ratios, type Ratios } from "./comparison-table.js";
import type { PeerResults, PeerRunOptions } from "./peer-runner.js";

const PEERS = ["restate", "dbos"] as const;
type PeerName = (typeof PEERS)[number];

/** What `npm run bench:peers` writes. */
interface PeersComparison {
  format: "stepwise-bench-peers/1";
  startedAt: string;
  git: BenchResults["git"];
  machine: BenchResults["machine"];
  sizes: Omit<PeerRunOptions, "out">;
  stepwise: BenchResults | undefined;
  peers: PeerResults[];
  /** Stepwise / peer, by peer and `<workload>.<figure>`. */
  ratios: Ratios;
  ok: boolean;
}

const USAGE = `Usage: npm run bench:peers -- [options]

  --peers restate,dbos   peers to compare with (both)
  --repeat N             measurements of each workload per system; medians are compared (3)
  --warmup F             share of each workload run first, unmeasured (0.25)
  --runs N --inflight N  W1 (2000, 200)
  --steps N --step-reps N  W2 (100, 5)
  --latency-runs N       W3 (200)
  --out FILE             also write the JSON comparison to FILE
  --no-save              do not write bench/results/peers-<timestamp>.json

Restate runs only inside a loopback-only network namespace, through
../shared/tools/loopback-only beside the repository (or $LOOPBACK_ONLY);
without that tool Restate is skipped, never run on the host network.`;

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    help: { type: "boolean", short: "h" },
    peers: { type: "string", default: PEERS.join(",") },
    repeat: { type: "string", default: "3" },
    warmup: { type: "string", default: "0.25" },
    runs: { type: "string", default: "2000" },
    inflight: { type: "string", default: "200" },
    steps: { type: "string", default: "100" },
    "step-reps": { type: "string", default: "5" },
    "latency-runs": { type: "string", default: "200" },
    out: { type: "string" },
    "no-save": { type: "boolean", default: false },
  },
});
if (values.help) {
  process.stdout.write(`${USAGE}\n`);
  process.exit(0);
}
const peers = values.peers.split(",").map((p) => p.trim()) as PeerName[];
for (const p of peers) if (!PEERS.includes(p)) throw new Error(`--peers: unknown peer ${JSON.stringify(p)} (known: ${PEERS.join(", ")})`);
const count = (name: string, text: string) => {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name}: expected a positive integer, got ${JSON.stringify(text)}`);
  return n;
};
const warmup = Number(values.warmup);
if (!(warmup >= 0 && warmup <= 1)) throw new Error(`--warmup: expected a share from 0 to 1, got ${JSON.stringify(values.warmup)}`);
const sizes: Omit<PeerRunOptions, "out"> = {
  repeat: count("repeat", values.repeat),
  warmup,
  runs: count("runs", values.runs),
  inflight: count("inflight", values.inflight),
  steps: count("steps", values.steps),
  stepReps: count("step-reps", values["step-reps"]),
  latencyRuns: count("latency-runs", values["latency-runs"]),
};

const startedAt = new Date();
const dir = mkdtempSync(join(tmpdir(), "bench-peers-"));
const log = (m: string) => process.stderr.write(`[bench:peers] ${m}\n`);

log("Stepwise: npm run bench's harness, W1-W3");
const stepwise = await runStepwise();
const peerResults: PeerResults[] = [];
for (const peer of peers) {
  log(`${peer}: W1-W3`);
  peerResults.push(peer === "restate" ? await runRestate() : await runDriver("dbos", [process.execPath, driver("dbos-driver.js")]));
}

const comparison: PeersComparison = {
  format: "stepwise-bench-peers/1",
  startedAt: startedAt.toISOString(),
  ...describeEnvironment(),
  sizes,
  stepwise,
  peers: peerResults,
  ratios: ratios(stepwise, peerResults),
  ok: (stepwise?.ok ?? false) && peerResults.every((p) => p.ok),
};
process.stdout.write(`\n${formatComparison(stepwise, peerResults, sizes.repeat)}\n`);
const paths = [
  ...(values["no-save"] ? [] : [defaultResultsPath(startedAt, "peers-")]),
  ...(values.out ? [values.out] : []),
];
writeResults(comparison, paths);
for (const p of paths) log(`results written to ${p}`);
rmSync(dir, { recursive: true, force: true });
process.exitCode = comparison.ok ? 0 : 1;

function driver(name: string): string {
  return fileURLToPath(new URL(`./${name}`, import.meta.url));
}

async function runStepwise(): Promise<BenchResults | undefined> {
  const out = join(dir, "stepwise.json");
  const args = [
    join(REPO_ROOT, "bench", "dist", "main.js"),
    "--workloads", "W1,W2,W3",
    "--repeat", String(sizes.repeat), "--warmup", String(sizes.warmup),
    "--runs", String(sizes.runs), "--inflight", String(sizes.inflight),
    "--steps", String(sizes.steps), "--step-reps", String(sizes.stepReps),
    "--latency-runs", String(sizes.latencyRuns),
    "--no-save", "--out", out,
  ];
  await run(process.execPath, args);
  return existsSync(out) ? (JSON.parse(readFileSync(out, "utf8")) as BenchResults) : undefined;
}

/** Restate only ever runs inside the loopback-only namespace: its server phones home at every start. */
async function runRestate(): Promise<PeerResults> {
  const tool = process.env["LOOPBACK_ONLY"] ?? join(REPO_ROOT, "..", "shared", "tools", "loopback-only");
  if (!existsSync(tool)) {
    return { peer: "restate", version: "", setup: "", workloads: {}, ok: false, error: `not run: no loopback-only tool at ${tool}` };
  }
  return runDriver("restate", [tool, process.execPath, driver("restate-driver.js")]);
}

async function runDriver(peer: PeerName, command: string[]): Promise<PeerResults> {
  const out = join(dir, `${peer}.json`);
  const options: PeerRunOptions = { ...sizes, out };
  await run(command[0]!, [...command.slice(1), JSON.stringify(options)]);
  if (!existsSync(out)) return { peer, version: "", setup: "", workloads: {}, ok: false, error: "the driver wrote no results" };
  return JSON.parse(readFileSync(out, "utf8")) as PeerResults;
}

function run(command: string, args: string[]): Promise<number | null> {
  return new Promise((resolve) => {
    const p = spawn(command, args, { stdio: ["ignore", "inherit", "inherit"] });
    p.on("exit", (code) => resolve(code));
  });
}
