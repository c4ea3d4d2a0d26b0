import { isDeepStrictEqual } from "node:util";
import type { RunInfo } from "@stepwise/sdk";

/** How the runs of one workload measurement turned out. */
export interface Verification {
  /** Runs the workload started. */
  expected: number;
  /** Runs that ended COMPLETED with the right output. */
  verified: number;
  /** Runs never seen ending. */
  lost: number;
  /** Runs that ended otherwise, or with another output. */
  wrong: number;
  /** The first problems, for the report. */
  problems: string[];
  /** Ids of the verified runs, for the journal check. */
  runIds: string[];
}

const MAX_PROBLEMS = 10;

/** Collects the outcome of every run of a workload; nothing may be lost or wrong. */
export class RunVerifier {
  private readonly result: Verification;

  constructor(expected: number) {
    this.result = { expected, verified: 0, lost: 0, wrong: 0, problems: [], runIds: [] };
  }

  /** Checks that a run completed with the expected output; true if so. */
  check(run: RunInfo, expectedOutput: unknown): boolean {
    if (run.status !== "COMPLETED") {
      return this.wrong(`run ${run.id} ended ${run.status}${run.error ? `: ${run.error.message}` : ""}`);
    }
    if (!isDeepStrictEqual(run.output, expectedOutput)) {
      return this.wrong(`run ${run.id} returned ${JSON.stringify(run.output)}, expected ${JSON.stringify(expectedOutput)}`);
    }
    this.result.verified++;
    this.result.runIds.push(run.id);
    return true;
  }

  /** Records a run that ended wrong in a way check() does not see; returns false. */
  wrong(problem: string): false {
    this.result.wrong++;
    this.note(problem);
    return false;
  }

  /** Records a run that was never seen ending. */
  lost(problem: string): void {
    this.result.lost++;
    this.note(problem);
  }

  /** The outcome so far. */
  get verification(): Verification {
    return this.result;
  }

  private note(problem: string): void {
    if (this.result.problems.length < MAX_PROBLEMS) this.result.problems.push(problem);
  }
}

/** True when every run a workload started was verified. */
export function allVerified(v: Verification): boolean {
  return v.lost === 0 && v.wrong === 0 && v.verified === v.expected;
}
