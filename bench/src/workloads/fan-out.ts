import { isDeepStrictEqual } from "node:util";
import { EVENTS, expectedFanOut, stepOutput, type FanOutEvent } from "../workload-shapes.js";
import type { ClientContext, ClientWorkloadResult } from "../client-workload.js";
import { median } from "../percentiles.js";
import { EventSender } from "../event-sender.js";
import { RunVerifier } from "../verification.js";

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
  const sender = new EventSender(ctx.client);
  const verifier = new RunVerifier(params.reps);
  const waiter = ctx.waiter("W6", { initialEstimateMs: 10 + 0.5 * params.width, timeoutMs: 300_000 });
  const readsBefore = waiter.reads;
  const toEnd: number[] = [];
  const inRun: number[] = [];
  for (let i = 0; i < params.reps; i++) {
    const run = ctx.nextRun();
    const sent = await sender.send({ name: EVENTS.fanOut, data: { run, width: params.width } satisfies FanOutEvent });
    let ended;
    try {
      ended = await waiter.waitForEnd(sent.id, sent.sentAt);
    } catch (err) {
      verifier.lost(String(err));
      continue;
    }
    toEnd.push(ended.latencyMs);
    const { startedAt, endedAt } = ended.run;
    if (startedAt && endedAt) inRun.push(endedAt.getTime() - startedAt.getTime());
    const full = await ctx.client.getRun(ended.run.id);
    const byKey = new Map(full.steps.map((s) => [s.key, s.output]));
    let journalOk = full.steps.length === params.width;
    for (let j = 0; journalOk && j < params.width; j++) journalOk = isDeepStrictEqual(byKey.get(`leaf:${j}`), stepOutput(run, `l${j}`));
    if (!journalOk) {
      verifier.wrong(`run ${full.id}: its journal does not hold the ${params.width} leaves with their outputs`);
    } else {
      verifier.check(ended.run, expectedFanOut(run, params.width));
    }
  }
  return {
    figures: { runMsP50: median(toEnd), runMsInRunP50: median(inRun) },
    verification: verifier.verification,
    reads: waiter.reads - readsBefore,
    sends: sender.calls,
  };
}
