import { isDeepStrictEqual } from "node:util";
import { EVENTS, expectedFanOut, stepOutput, type FanOutEvent } from "../workload-shapes.js";
import type { ClientContext, ClientWorkloadResult } from "../client-workload.js";
import { median } from "../percentiles.js";
import { runOneAtATime } from "./one-at-a-time.js";

/** Parameters of W6. */
export interface FanOutParams {
  /** Steps the run starts at once. */
  width: number;
  /** Runs, one after the other. */
  reps: number;
}

/**
 * W6, fan-out: `reps` runs, one at a time, of a function that starts
 * `width` steps at once (one Promise.all of step.run). Reports the time from
 * Send to the run seen ended, and from the run's start to its end as the
 * engine recorded them, medians over the runs. Every run's journal is read
 * back with GetRun: `width` steps, `leaf:0` to `leaf:<width-1>`, each with its
 * own output.
 */
export async function runFanOut(ctx: ClientContext, params: FanOutParams): Promise<ClientWorkloadResult> {
  const { latencies, inRun, ...rest } = await runOneAtATime(ctx, {
    workload: "W6",
    waiter: { initialEstimateMs: 10 + 0.5 * params.width, timeoutMs: 300_000 },
    reps: params.reps,
    event: (run) => ({ name: EVENTS.fanOut, data: { run, width: params.width } satisfies FanOutEvent }),
    journalProblem: (full, run) => {
      const byKey = new Map(full.steps.map((s) => [s.key, s.output]));
      const ok = full.steps.length === params.width && Array.from({ length: params.width }, (_, j) => j).every((j) => isDeepStrictEqual(byKey.get(`leaf:${j}`), stepOutput(run, `l${j}`)));
      return ok ? undefined : `its journal does not hold the ${params.width} leaves with their outputs`;
    },
    expected: (run) => expectedFanOut(run, params.width),
  });
  return { figures: { runMsP50: median(latencies), runMsInRunP50: median(inRun) }, ...rest };
}
