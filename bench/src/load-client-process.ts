// The load-generating client of the benchmark: sends events and reads runs
// through the SDK, in a process of its own (apart from the worker), as a
// user's application would. Forked by the orchestrator, which tells it over
// IPC which workload to drive.
import { Stepwise } from "@stepwise/sdk";
import type { ClientContext, ClientWorkloadResult } from "./client-workload.js";
import { EventSender } from "./event-sender.js";
import { announceReady, serveRpc } from "./ipc-rpc.js";
import { RunWaiter } from "./run-waiter.js";
import { runFanOut, type FanOutParams } from "./workloads/fan-out.js";
import { runLatency, type LatencyParams } from "./workloads/latency.js";
import { runLongRun, type LongRunParams } from "./workloads/long-run.js";
import { collectSleepers, sendSleepers, type SentSleepers, type SleepersParams } from "./workloads/sleepers.js";
import { runStepOverhead, type StepOverheadParams } from "./workloads/step-overhead.js";
import { runThroughput, type ThroughputParams } from "./workloads/throughput.js";
import { BENCH_APP_ID, EVENTS, type ProbeOutput } from "./workload-shapes.js";

/** Requests the orchestrator sends the client process. */
export type ClientRequest =
  | { kind: "probe" }
  | { kind: "throughput"; params: ThroughputParams }
  | { kind: "step-overhead"; params: StepOverheadParams }
  | { kind: "latency"; params: LatencyParams }
  | { kind: "fan-out"; params: FanOutParams }
  | { kind: "long-run"; params: LongRunParams }
  | { kind: "sleepers-send"; params: SleepersParams }
  | { kind: "sleepers-collect"; timeoutMs: number };

const client = new Stepwise({ appId: BENCH_APP_ID });
let runCounter = 0;
const waiters = new Map<string, RunWaiter>();
const ctx: ClientContext = {
  client,
  nextRun: () => runCounter++,
  waiter: (workload, options) => {
    let waiter = waiters.get(workload);
    if (!waiter) waiters.set(workload, (waiter = new RunWaiter(client, options)));
    return waiter;
  },
};
let sleepers: SentSleepers | undefined;

serveRpc(async (body): Promise<ClientWorkloadResult | ProbeOutput | number> => {
  const req = body as ClientRequest;
  switch (req.kind) {
    case "probe":
      return probe();
    case "throughput":
      return runThroughput(ctx, req.params);
    case "step-overhead":
      return runStepOverhead(ctx, req.params);
    case "latency":
      return runLatency(ctx, req.params);
    case "fan-out":
      return runFanOut(ctx, req.params);
    case "long-run":
      return runLongRun(ctx, req.params);
    case "sleepers-send":
      sleepers = await sendSleepers(ctx, req.params);
      return sleepers.events.length;
    case "sleepers-collect": {
      if (!sleepers) throw new Error("sleepers-collect before sleepers-send");
      const result = await collectSleepers(ctx, sleepers, req.timeoutMs);
      sleepers = undefined;
      return result;
    }
  }
});
// Exit cleanly when stopped, so a CPU profile (--cpu-prof) gets written.
process.once("SIGTERM", () => process.exit(0));
announceReady();

/** Runs the probe function once: it reports which step tools the worker's SDK has. */
async function probe(): Promise<ProbeOutput> {
  const sent = await new EventSender(client).send({ name: EVENTS.probe, data: {} });
  const { run } = await new RunWaiter(client, { initialEstimateMs: 20, timeoutMs: 30_000 }).waitForEnd(sent.id, sent.sentAt);
  if (run.status !== "COMPLETED") throw new Error(`the probe run ended ${run.status}: ${run.error?.message ?? ""}`);
  return run.output as ProbeOutput;
}
