import type { OutgoingEvent, RunInfo } from "@stepwise/sdk";
import type { ClientContext, ClientWorkloadResult } from "../client-workload.js";
import { EventSender } from "../event-sender.js";
import type { RunWaiterOptions } from "../run-waiter.js";
import { RunVerifier } from "../verification.js";

/** How a workload of runs one after the other makes and checks each run. */
export interface OneAtATime {
  /** The waiter's name and options. */
  workload: string;
  waiter: RunWaiterOptions;
  reps: number;
  /** The event of run number `run`. */
  event: (run: number) => OutgoingEvent;
  /** Why run number `run`'s journal (GetRun) is wrong, or undefined when it is right. */
  journalProblem: (full: RunInfo, run: number) => string | undefined;
  /** The output run number `run` must return. */
  expected: (run: number) => unknown;
}

/** What each run took: Send to seen ended, and its startedAt to endedAt as the engine recorded them. */
export interface OneAtATimeResult extends Omit<ClientWorkloadResult, "figures"> {
  latencies: number[];
  inRun: number[];
}

/**
 * Runs `reps` runs one after the other: sends each one's event, waits until
 * it is seen ended, reads its journal back with GetRun and checks it, then
 * its output. Lost and wrong runs are counted, not thrown.
 */
export async function runOneAtATime(ctx: ClientContext, spec: OneAtATime): Promise<OneAtATimeResult> {
  const sender = new EventSender(ctx.client);
  const verifier = new RunVerifier(spec.reps);
  const waiter = ctx.waiter(spec.workload, spec.waiter);
  const readsBefore = waiter.reads;
  const latencies: number[] = [];
  const inRun: number[] = [];
  for (let i = 0; i < spec.reps; i++) {
    const run = ctx.nextRun();
    const sent = await sender.send(spec.event(run));
    let ended;
    try {
      ended = await waiter.waitForEnd(sent.id, sent.sentAt);
    } catch (err) {
      verifier.lost(String(err));
      continue;
    }
    latencies.push(ended.latencyMs);
    const { startedAt, endedAt } = ended.run;
    if (startedAt && endedAt) inRun.push(endedAt.getTime() - startedAt.getTime());
    const full = await ctx.client.getRun(ended.run.id);
    const problem = spec.journalProblem(full, run);
    if (problem) verifier.wrong(`run ${full.id}: ${problem}`);
    else verifier.check(ended.run, spec.expected(run));
  }
  return { latencies, inRun, verification: verifier.verification, reads: waiter.reads - readsBefore, sends: sender.calls };
}
