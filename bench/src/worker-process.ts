// The worker process of the benchmark: a Worker serving the benchmark
// functions, as a user runs one, in a process of its own. Forked by the
// orchestrator, which asks it over IPC for its progress counters (W4, W7), the peaks of
// W5's handler bodies per customer, and to stop.
import { Stepwise, Worker } from "@stepwise/sdk";
import { createBenchFunctions, type SleepProgress } from "./bench-functions.js";
import { announceReady, serveRpc } from "./ipc-rpc.js";
import { RunningPerKey } from "./running-per-key.js";
import { BENCH_APP_ID } from "./workload-shapes.js";

/** Requests the orchestrator sends the worker process. */
export type WorkerRequest = { kind: "progress" } | { kind: "running-peaks" } | { kind: "stop" };

const progress: SleepProgress = { asleep: 0, woke: 0, longRunSteps: 0 };
const running = new RunningPerKey();
const stepwise = new Stepwise({ appId: BENCH_APP_ID });
const worker = new Worker({
  functions: createBenchFunctions(stepwise, progress, running),
  capacity: Number(process.env["BENCH_WORKER_CAPACITY"] ?? 200),
  handleSignals: false,
  onError: (err) => process.stderr.write(`worker: ${err.message}\n`),
});

serveRpc(async (body) => {
  const req = body as WorkerRequest;
  switch (req.kind) {
    case "progress":
      return { ...progress };
    case "running-peaks":
      return running.take();
    case "stop":
      await worker.close();
      setImmediate(() => process.exit(0));
      return null;
  }
});
await worker.connect();
announceReady();
