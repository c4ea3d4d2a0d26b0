import type { RunInfo } from "@stepwise/sdk";
import { EVENTS, longRunEntries, stepOutput, type LongRunEvent, type LongRunOutput } from "../workload-shapes.js";
import type { ClientContext, ClientWorkloadResult } from "../client-workload.js";
import { EventSender } from "../event-sender.js";
import { RunVerifier } from "../verification.js";

/** Parameters of W7. */
export interface LongRunParams {
  /** Sequential steps before the sleep. */
  steps: number;
  /** The sleep after them, in milliseconds. */
  sleepMs: number;
}

/**
 * W7, a long run: one run of `steps` sequential steps, then a sleep, after
 * which the run is started again with its whole journal and the SDK replays
 * it before the next step. Reports the time per step (from the step before
 * the sequential steps to the one after them, both journaled, so the
 * replay cannot change them) and the time from the sleep's due time to the
 * first step after it: the timer, the claim, loading the journal, sending
 * it to the worker and the replay. The journal is checked in Postgres by
 * the orchestrator (every entry once, `steps + 4` of them).
 */
export async function runLongRun(ctx: ClientContext, params: LongRunParams): Promise<ClientWorkloadResult> {
  const sender = new EventSender(ctx.client);
  const verifier = new RunVerifier(1);
  const waiter = ctx.waiter("W7", { initialEstimateMs: 1_000 + 2 * params.steps, timeoutMs: 600_000 });
  const readsBefore = waiter.reads;
  const run = ctx.nextRun();
  const figures: Record<string, number> = {};
  const sent = await sender.send({ name: EVENTS.longRun, data: { run, ...params } satisfies LongRunEvent });
  try {
    const ended = await waiter.waitForEnd(sent.id, sent.sentAt);
    const out = ended.run.output as LongRunOutput | undefined;
    if (checkLongRun(verifier, ended.run, run, params) && out) {
      figures["msPerStep"] = (out.dueAtMs - params.sleepMs - out.startedAtMs) / params.steps;
      figures["replayMs"] = out.resumedAtMs - out.dueAtMs;
      figures["journalEntries"] = longRunEntries(params.steps);
    }
  } catch (err) {
    verifier.lost(String(err));
  }
  return { figures, verification: verifier.verification, reads: waiter.reads - readsBefore, sends: sender.calls };
}

/** Checks the run's result: its own fields exactly, its times for order (they vary by run). */
function checkLongRun(verifier: RunVerifier, info: RunInfo, run: number, params: LongRunParams): boolean {
  const out = info.output as Partial<LongRunOutput> | undefined;
  const times = out && typeof out.startedAtMs === "number" && typeof out.dueAtMs === "number" && typeof out.resumedAtMs === "number";
  if (info.status === "COMPLETED" && !(times && out.startedAtMs! <= out.dueAtMs! - params.sleepMs && out.dueAtMs! <= out.resumedAtMs!)) {
    return verifier.wrong(`run ${info.id}: its times are missing or out of order: ${JSON.stringify(out)}`);
  }
  // The exact fields, with the times the run itself journaled.
  return verifier.check(info, {
    run,
    steps: params.steps,
    lastTag: stepOutput(run, `s${params.steps - 1}`).tag,
    startedAtMs: out?.startedAtMs,
    dueAtMs: out?.dueAtMs,
    resumedAtMs: out?.resumedAtMs,
  });
}
