import { parseDuration } from "../duration.js";
import { EVENTS, type SleepEvent, type SleepOutput } from "../workload-shapes.js";
import type { ClientContext, ClientWorkloadResult } from "../client-workload.js";
import { EventSender } from "../event-sender.js";
import { distribution } from "../percentiles.js";
import { RunVerifier } from "../verification.js";

/** Parameters of W4. */
export interface SleepersParams {
  runs: number;
  /** What each run passes to step.sleep, such as "60s". */
  sleep: string;
}

/** The runs W4 sent, kept by the client between sending and collecting. */
export interface SentSleepers {
  events: { id: string; run: number }[];
  sleepMs: number;
  /** Send calls made. */
  sends: number;
}

/** How early a run may wake, in ms, before it counts as wrong (clock reads differ by a little). */
const EARLY_TOLERANCE_MS = 5;
const ENDED = new Set<string>(["COMPLETED", "FAILED", "CANCELLED"]);

/**
 * W4, first half: sends `runs` events of the sleeping function, in batches
 * of up to 500 per Send. Each run journals the time, sleeps, and returns how
 * late it woke. The orchestrator measures memory while they sleep.
 */
export async function sendSleepers(ctx: ClientContext, params: SleepersParams): Promise<SentSleepers> {
  const sleepMs = parseDuration(params.sleep);
  const sender = new EventSender(ctx.client, { maxBatch: 500, maxConcurrent: 4 });
  const runs = Array.from({ length: params.runs }, () => ctx.nextRun());
  const sent = await Promise.all(
    runs.map((run) => sender.send({ name: EVENTS.sleep, data: { run, sleep: params.sleep, sleepMs } satisfies SleepEvent })),
  );
  return { events: sent.map((s, i) => ({ id: s.id, run: runs[i]! })), sleepMs, sends: sender.calls };
}

/**
 * W4, second half: once the worker has run every step after the sleep,
 * waits for every run to end (all on the client's one WatchRuns stream),
 * checks its output, and reports the timer lateness the runs measured,
 * p50 and p99.
 */
export async function collectSleepers(ctx: ClientContext, sent: SentSleepers, timeoutMs: number): Promise<ClientWorkloadResult> {
  const verifier = new RunVerifier(sent.events.length);
  const lateness: number[] = [];
  const reads = sent.events.length;
  await Promise.all(
    sent.events.map(async ({ id, run }) => {
      const { runs, done } = await ctx.client.waitForRuns(id, { timeoutMs: Math.min(timeoutMs, 300_000) });
      const [ended] = runs;
      if (!done || !ended || !ENDED.has(ended.status)) {
        verifier.lost(`the run of event ${id} did not end in time`);
        return;
      }
      const output = ended.output as SleepOutput | undefined;
      if (typeof output?.latenessMs !== "number") {
        verifier.check(ended, { run, latenessMs: "a number" });
        return;
      }
      if (output.latenessMs < -EARLY_TOLERANCE_MS) {
        verifier.wrong(`run ${ended.id} woke ${-output.latenessMs} ms before its sleep was due`);
        return;
      }
      if (verifier.check(ended, { run, latenessMs: output.latenessMs })) lateness.push(output.latenessMs);
    }),
  );
  const dist = distribution(lateness);
  return {
    figures: { latenessP50Ms: dist.p50, latenessP99Ms: dist.p99, latenessMaxMs: dist.max },
    verification: verifier.verification,
    reads,
    sends: sent.sends,
  };
}
