import { readFileSync, writeFileSync } from "node:fs";
import { medianOfEach } from "../../dist/percentiles.js";
import { medianUsage, UsageWindow, type ProcessUsage, type WindowUsage } from "../../dist/usage-window.js";
import {
  peerLatency,
  peerStepOverhead,
  peerThroughput,
  type Invoke,
  type PeerMeasurement,
  type PeerVerification,
  type PeerWorkloadSizes,
} from "./peer-workloads.js";

/** The workloads compared with peers. */
export const PEER_WORKLOADS = ["W1", "W2", "W3"] as const;

/** A compared workload's name. */
export type PeerWorkloadName = (typeof PEER_WORKLOADS)[number];

/** What a peer driver is told, on its command line as JSON. */
export interface PeerRunOptions extends PeerWorkloadSizes {
  repeat: number;
  warmup: number;
  /** File the driver writes its PeerResults to. */
  out: string;
}

/** One workload on one peer: medians over the repetitions, and each repetition. */
export interface PeerWorkloadReport {
  figures: Record<string, number>;
  usage: Record<string, ProcessUsage>;
  repetitions: (PeerMeasurement & { usage: WindowUsage })[];
  ok: boolean;
}

/** What a peer driver writes. */
export interface PeerResults {
  peer: string;
  version: string;
  /** How the peer was deployed, in a sentence. */
  setup: string;
  workloads: Partial<Record<PeerWorkloadName, PeerWorkloadReport>>;
  ok: boolean;
  error?: string;
}

const allVerified = (v: PeerVerification) => v.lost === 0 && v.wrong === 0 && v.verified === v.expected;

/**
 * Runs W1–W3 against a peer through invoke, as `npm run bench` runs them
 * against Stepwise: a warm-up of options.warmup of each workload, then
 * options.repeat measurements in usage windows over the named processes.
 */
export async function runPeerWorkloads(
  invoke: Invoke,
  options: PeerRunOptions,
  pids: ReadonlyMap<string, number>,
): Promise<Partial<Record<PeerWorkloadName, PeerWorkloadReport>>> {
  const share = (n: number) => Math.max(1, Math.ceil(n * options.warmup));
  const plans: Record<PeerWorkloadName, { warmup: () => Promise<unknown>; measure: () => Promise<PeerMeasurement> }> = {
    W1: {
      warmup: () => peerThroughput(invoke, share(options.runs), options.inflight),
      measure: () => peerThroughput(invoke, options.runs, options.inflight),
    },
    W2: {
      warmup: () => peerStepOverhead(invoke, options.steps, 1),
      measure: () => peerStepOverhead(invoke, options.steps, options.stepReps),
    },
    W3: {
      warmup: () => peerLatency(invoke, share(options.latencyRuns)),
      measure: () => peerLatency(invoke, options.latencyRuns),
    },
  };
  const reports: Partial<Record<PeerWorkloadName, PeerWorkloadReport>> = {};
  for (const name of PEER_WORKLOADS) {
    const plan = plans[name];
    if (options.warmup > 0) await plan.warmup();
    const repetitions: PeerWorkloadReport["repetitions"] = [];
    for (let i = 0; i < options.repeat; i++) {
      const window = UsageWindow.start(pids);
      const measurement = await plan.measure();
      repetitions.push({ ...measurement, usage: window.finish() });
    }
    reports[name] = {
      figures: medianOfEach(repetitions.map((r) => r.figures)),
      usage: medianUsage(repetitions.map((r) => r.usage.processes)),
      repetitions,
      ok: repetitions.every((r) => allVerified(r.verification)),
    };
  }
  return reports;
}

/** Reads a driver's options from its first argument (JSON). */
export function driverOptions(): PeerRunOptions {
  const text = process.argv[2];
  if (!text) throw new Error("usage: <driver> '<options as JSON>'");
  return JSON.parse(text) as PeerRunOptions;
}

/** Writes a driver's results where the options say. */
export function writePeerResults(options: PeerRunOptions, results: PeerResults): void {
  writeFileSync(options.out, `${JSON.stringify(results, null, 2)}\n`);
}

/** Version of a package installed in bench/peers/node_modules. */
export function installedVersion(pkg: string): string {
  const path = new URL(`../node_modules/${pkg}/package.json`, import.meta.url);
  return (JSON.parse(readFileSync(path, "utf8")) as { version: string }).version;
}
