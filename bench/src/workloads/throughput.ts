import { EVENTS, expectedThreeSteps, THREE_STEP_IDS, type ThreeStepsEvent } from "../workload-shapes.js";
import type { ClientContext, ClientWorkloadResult } from "../client-workload.js";
import { distribution } from "../percentiles.js";
import { EventSender } from "../event-sender.js";
import { RunVerifier } from "../verification.js";

/** Parameters of W1. */
export interface ThroughputParams {
  runs: number;
  inflight: number;
}

/**
 * W1, throughput: `runs` runs of the three-step function, keeping
 * `inflight` runs started and not yet seen ended (a closed loop: each run
 * seen ended lets the next one be sent). Reports runs/s and steps/s from the
 * first Send to the last run seen ended, and the runs' latency from Send to
 * seen ended. Events freed in the same turn of the event loop share a Send
 * call, as a busy producer would batch them.
 */
export async function runThroughput(ctx: ClientContext, params: ThroughputParams): Promise<ClientWorkloadResult> {
  const sender = new EventSender(ctx.client);
  const verifier = new RunVerifier(params.runs);
  const waiter = ctx.waiter("W1", { initialEstimateMs: 2 * params.inflight, timeoutMs: 120_000 });
  const readsBefore = waiter.reads;
  const latencies: number[] = [];
  let started = 0;
  const lane = async () => {
    while (started < params.runs) {
      started++;
      const run = ctx.nextRun();
      const sent = await sender.send({ name: EVENTS.threeSteps, data: { run } satisfies ThreeStepsEvent });
      try {
        const ended = await waiter.waitForEnd(sent.id, sent.sentAt);
        latencies.push(ended.latencyMs);
        verifier.check(ended.run, expectedThreeSteps(run));
      } catch (err) {
        verifier.lost(String(err));
      }
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: Math.min(params.inflight, params.runs) }, lane));
  const seconds = (performance.now() - t0) / 1000;
  const latency = distribution(latencies);
  return {
    figures: {
      runsPerSecond: params.runs / seconds,
      stepsPerSecond: (params.runs * THREE_STEP_IDS.length) / seconds,
      latencyP50Ms: latency.p50,
      latencyP99Ms: latency.p99,
    },
    verification: verifier.verification,
    reads: waiter.reads - readsBefore,
    sends: sender.calls,
  };
}
