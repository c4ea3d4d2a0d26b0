import { isDeepStrictEqual } from "node:util";
import { distribution, median } from "../../dist/percentiles.js";
import {
  expectedManySteps,
  expectedOneStep,
  expectedThreeSteps,
  THREE_STEP_IDS,
  type ManyStepsEvent,
  type OneStepEvent,
  type ThreeStepsEvent,
} from "../../dist/workload-shapes.js";

/** The three functions every peer implements with the same shape as Stepwise's. */
export type PeerFunction = "threeSteps" | "manySteps" | "oneStep";

/**
 * Starts a run of a peer's function and resolves with its output once it
 * ended: one request-response call, since both peers answer with the result.
 */
export type Invoke = (fn: PeerFunction, input: ThreeStepsEvent | ManyStepsEvent | OneStepEvent) => Promise<unknown>;

/** How the runs of one peer measurement turned out. */
export interface PeerVerification {
  expected: number;
  verified: number;
  /** Calls that failed: the run's result never came. */
  lost: number;
  /** Runs that returned another output. */
  wrong: number;
  problems: string[];
}

/** Figures of one measurement, named as in Stepwise's results. */
export interface PeerMeasurement {
  figures: Record<string, number>;
  verification: PeerVerification;
}

/** Sizes of the workloads, as `npm run bench` takes them. */
export interface PeerWorkloadSizes {
  runs: number;
  inflight: number;
  steps: number;
  stepReps: number;
  latencyRuns: number;
}

/** Counts each run's outcome against the output it must have. */
class Checker {
  readonly v: PeerVerification;
  constructor(expected: number) {
    this.v = { expected, verified: 0, lost: 0, wrong: 0, problems: [] };
  }
  async call(invoke: () => Promise<unknown>, expected: unknown): Promise<boolean> {
    let output: unknown;
    try {
      output = await invoke();
    } catch (err) {
      this.v.lost++;
      this.note(String(err));
      return false;
    }
    if (!isDeepStrictEqual(output, expected)) {
      this.v.wrong++;
      this.note(`returned ${JSON.stringify(output)}, expected ${JSON.stringify(expected)}`);
      return false;
    }
    this.v.verified++;
    return true;
  }
  private note(p: string): void {
    if (this.v.problems.length < 10) this.v.problems.push(p);
  }
}

let runCounter = 0;

/** W1 on a peer: `runs` three-step runs, `inflight` calls at once; runs/s, steps/s and latency. */
export async function peerThroughput(invoke: Invoke, runs: number, inflight: number): Promise<PeerMeasurement> {
  const checker = new Checker(runs);
  const latencies: number[] = [];
  let started = 0;
  const lane = async () => {
    while (started < runs) {
      started++;
      const run = runCounter++;
      const t = performance.now();
      if (await checker.call(() => invoke("threeSteps", { run }), expectedThreeSteps(run))) latencies.push(performance.now() - t);
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: Math.min(inflight, runs) }, lane));
  const seconds = (performance.now() - t0) / 1000;
  const latency = distribution(latencies);
  return {
    figures: {
      runsPerSecond: runs / seconds,
      stepsPerSecond: (runs * THREE_STEP_IDS.length) / seconds,
      latencyP50Ms: latency.p50,
      latencyP99Ms: latency.p99,
    },
    verification: checker.v,
  };
}

/** W2 on a peer: `reps` runs of `steps` sequential steps, one at a time; ms per step, median. */
export async function peerStepOverhead(invoke: Invoke, steps: number, reps: number): Promise<PeerMeasurement> {
  const checker = new Checker(reps);
  const perStep: number[] = [];
  for (let i = 0; i < reps; i++) {
    const run = runCounter++;
    const t = performance.now();
    if (await checker.call(() => invoke("manySteps", { run, steps }), expectedManySteps(run, steps))) {
      perStep.push((performance.now() - t) / steps);
    }
  }
  return { figures: { msPerStepP50: median(perStep) }, verification: checker.v };
}

/** W3 on a peer: `runs` one-step runs, one after the other; latency p50 and p99. */
export async function peerLatency(invoke: Invoke, runs: number): Promise<PeerMeasurement> {
  const checker = new Checker(runs);
  const latencies: number[] = [];
  for (let i = 0; i < runs; i++) {
    const run = runCounter++;
    const t = performance.now();
    if (await checker.call(() => invoke("oneStep", { run }), expectedOneStep(run))) latencies.push(performance.now() - t);
  }
  const latency = distribution(latencies);
  return { figures: { latencyP50Ms: latency.p50, latencyP99Ms: latency.p99 }, verification: checker.v };
}
