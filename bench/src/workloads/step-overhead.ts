import { isDeepStrictEqual } from "node:util";
import { EVENTS, expectedManySteps, stepOutput, type ManyStepsEvent } from "../workload-shapes.js";
import type { ClientContext, ClientWorkloadResult } from "../client-workload.js";
import { median } from "../percentiles.js";
import { EventSender } from "../event-sender.js";
import { RunVerifier } from "../verification.js";

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
  const sender = new EventSender(ctx.client);
  const verifier = new RunVerifier(params.reps);
  const waiter = ctx.waiter("W2", { initialEstimateMs: 10 + 0.5 * params.steps, timeoutMs: 120_000 });
  const readsBefore = waiter.reads;
  const perStep: number[] = [];
  const perStepInRun: number[] = [];
  for (let i = 0; i < params.reps; i++) {
    const run = ctx.nextRun();
    const sent = await sender.send({ name: EVENTS.manySteps, data: { run, steps: params.steps } satisfies ManyStepsEvent });
    let ended;
    try {
      ended = await waiter.waitForEnd(sent.id, sent.sentAt);
    } catch (err) {
      verifier.lost(String(err));
      continue;
    }
    perStep.push(ended.latencyMs / params.steps);
    const { startedAt, endedAt } = ended.run;
    if (startedAt && endedAt) perStepInRun.push((endedAt.getTime() - startedAt.getTime()) / params.steps);
    const full = await ctx.client.getRun(ended.run.id);
    const journalOk =
      full.steps.length === params.steps &&
      full.steps.every((s, j) => s.key === `step:${j}` && isDeepStrictEqual(s.output, stepOutput(run, `s${j}`)));
    if (!journalOk) {
      verifier.wrong(`run ${full.id}: its journal does not hold the ${params.steps} steps in order with their outputs`);
    } else {
      verifier.check(ended.run, expectedManySteps(run, params.steps));
    }
  }
  return {
    figures: { msPerStepP50: median(perStep), msPerStepInRunP50: median(perStepInRun) },
    verification: verifier.verification,
    reads: waiter.reads - readsBefore,
    sends: sender.calls,
  };
}
