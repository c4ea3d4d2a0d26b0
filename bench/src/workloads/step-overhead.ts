import { isDeepStrictEqual } from "node:util";
import { EVENTS, expectedManySteps, stepOutput, type ManyStepsEvent } from "../workload-shapes.js";
import type { ClientContext, ClientWorkloadResult } from "../client-workload.js";
import { median } from "../percentiles.js";
import { runOneAtATime } from "./one-at-a-time.js";

/** Parameters of W2. */
export interface StepOverheadParams {
  /** Sequential steps in the run. */
  steps: number;
  /** Runs, one after the other. */
  reps: number;
}

/**
 * W2, step overhead: `reps` runs, one at a time, of a function of `steps`
 * sequential steps. Reports the time per step as the client sees it (Send
 * to seen ended, divided by the steps) and as the engine recorded it (the
 * run's start to its end), medians over the runs. Every run's journal is
 * read back with GetRun and checked step by step.
 */
export async function runStepOverhead(ctx: ClientContext, params: StepOverheadParams): Promise<ClientWorkloadResult> {
  const { latencies, inRun, ...rest } = await runOneAtATime(ctx, {
    workload: "W2",
    waiter: { initialEstimateMs: 10 + 0.5 * params.steps, timeoutMs: 120_000 },
    reps: params.reps,
    event: (run) => ({ name: EVENTS.manySteps, data: { run, steps: params.steps } satisfies ManyStepsEvent }),
    journalProblem: (full, run) => {
      const ok = full.steps.length === params.steps && full.steps.every((s, j) => s.key === `step:${j}` && isDeepStrictEqual(s.output, stepOutput(run, `s${j}`)));
      return ok ? undefined : `its journal does not hold the ${params.steps} steps in order with their outputs`;
    },
    expected: (run) => expectedManySteps(run, params.steps),
  });
  const perStep = (ms: number[]) => median(ms.map((m) => m / params.steps));
  return { figures: { msPerStepP50: perStep(latencies), msPerStepInRunP50: perStep(inRun) }, ...rest };
}
