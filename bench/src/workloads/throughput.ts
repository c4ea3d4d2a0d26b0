import {
  customerOf,
  EVENTS,
  expectedThreeSteps,
  THREE_STEP_IDS,
  type LimitedThreeStepsEvent,
  type ThreeStepsEvent,
} from "../workload-shapes.js";
import type { ClientContext, ClientWorkloadResult } from "../client-workload.js";
import { distribution } from "../percentiles.js";
import { EventSender } from "../event-sender.js";
import { RunVerifier } from "../verification.js";

/** Parameters of W1, and of W5 when customers is set. */
export interface ThroughputParams {
  runs: number;
  inflight: number;
  /** W5: the runs go to the limited function, each for one of this many customers, round robin. */
  customers?: number;
}

/**
 * W1, throughput: `runs` runs of the three-step function, keeping
 * `inflight` runs started and not yet seen ended (a closed loop: each run
 * seen ended lets the next one be sent). Reports runs/s and steps/s from the
 * first Send to the last run seen ended, and the runs' latency from Send to
 * seen ended. Events freed in the same turn of the event loop share a Send
 * call, as a busy producer would batch them.
 *
 * W5 (`customers` set) is the same loop on the function limited per
 * customer; the i-th run sent is customer i mod `customers`'s. It also
 * reports the most runs one customer had in flight at once, as the client
 * saw them: the limit can only make runs wait when that is above it.
 */
export async function runThroughput(ctx: ClientContext, params: ThroughputParams): Promise<ClientWorkloadResult> {
  const { customers } = params;
  const sender = new EventSender(ctx.client);
  const verifier = new RunVerifier(params.runs);
  const waiter = ctx.waiter(customers === undefined ? "W1" : "W5", { initialEstimateMs: 2 * params.inflight, timeoutMs: 120_000 });
  const readsBefore = waiter.reads;
  const latencies: number[] = [];
  const inFlight = new Map<string, number>();
  let peakInFlight = 0;
  let started = 0;
  const lane = async () => {
    while (started < params.runs) {
      const run = ctx.nextRun();
      const customer = customers === undefined ? undefined : customerOf(started, customers);
      started++;
      if (customer !== undefined) {
        const n = (inFlight.get(customer) ?? 0) + 1;
        inFlight.set(customer, n);
        peakInFlight = Math.max(peakInFlight, n);
      }
      const event =
        customer === undefined
          ? { name: EVENTS.threeSteps, data: { run } satisfies ThreeStepsEvent }
          : { name: EVENTS.limitedThreeSteps, data: { run, customer } satisfies LimitedThreeStepsEvent };
      const sent = await sender.send(event);
      try {
        const ended = await waiter.waitForEnd(sent.id, sent.sentAt);
        latencies.push(ended.latencyMs);
        verifier.check(ended.run, expectedThreeSteps(run));
      } catch (err) {
        verifier.lost(String(err));
      }
      if (customer !== undefined) inFlight.set(customer, inFlight.get(customer)! - 1);
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
      ...(customers === undefined ? {} : { peakInFlightPerCustomer: peakInFlight }),
    },
    verification: verifier.verification,
    reads: waiter.reads - readsBefore,
    sends: sender.calls,
  };
}
