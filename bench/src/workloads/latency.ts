import { EVENTS, expectedOneStep, type OneStepEvent } from "../workload-shapes.js";
import type { ClientContext, ClientWorkloadResult } from "../client-workload.js";
import { distribution } from "../percentiles.js";
import { EventSender } from "../event-sender.js";
import { RunVerifier } from "../verification.js";

/** Parameters of W3. */
export interface LatencyParams {
  runs: number;
}

/**
 * W3, latency: `runs` runs of the one-step function, one after the other,
 * each timed from the start of its Send to the read that sees it ended
 * with its output. Reads after the first come every millisecond, so the
 * resolution is about 1 ms plus a read's round trip.
 */
export async function runLatency(ctx: ClientContext, params: LatencyParams): Promise<ClientWorkloadResult> {
  const sender = new EventSender(ctx.client);
  const verifier = new RunVerifier(params.runs);
  const waiter = ctx.waiter("W3", { initialEstimateMs: 10, minIntervalMs: 1, timeoutMs: 30_000 });
  const readsBefore = waiter.reads;
  const latencies: number[] = [];
  for (let i = 0; i < params.runs; i++) {
    const run = ctx.nextRun();
    const sent = await sender.send({ name: EVENTS.oneStep, data: { run } satisfies OneStepEvent });
    try {
      const ended = await waiter.waitForEnd(sent.id, sent.sentAt);
      latencies.push(ended.latencyMs);
      verifier.check(ended.run, expectedOneStep(run));
    } catch (err) {
      verifier.lost(String(err));
    }
  }
  const latency = distribution(latencies);
  return {
    figures: { latencyP50Ms: latency.p50, latencyP99Ms: latency.p99 },
    verification: verifier.verification,
    reads: waiter.reads - readsBefore,
    sends: sender.calls,
  };
}
