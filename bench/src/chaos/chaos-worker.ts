// A worker process of the chaos suite: an SDK Worker serving the chaos
// function, connected to one executor (CHAOS_EXECUTOR_URL), keeping its
// execution log in CHAOS_EXEC_LOG. Prints `worker-ready` once registered.
// The orchestrator SIGKILLs it as a fault and starts a new one.
import { Stepwise, Worker } from "@stepwise/sdk";
import { CHAOS_APP_ID, createChaosFunction } from "./chaos-function.js";
import { ExecutionLog } from "./execution-log.js";

const env = (name: string): string => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};

const log = new ExecutionLog(env("CHAOS_EXEC_LOG"));
const [minWork, maxWork] = env("CHAOS_STEP_WORK_MS").split("-").map(Number) as [number, number];
const stepwise = new Stepwise({ appId: CHAOS_APP_ID, url: "http://127.0.0.1:1" });
const worker = new Worker({
  url: env("CHAOS_EXECUTOR_URL"),
  functions: [createChaosFunction(stepwise, log, () => minWork + Math.random() * (maxWork - minWork))],
  capacity: Number(env("CHAOS_WORKER_CAPACITY")),
  handleSignals: false,
  maxReconnectDelayMs: 500,
  onError: (err) => process.stderr.write(`${new Date().toISOString()} worker: ${err.message}\n`),
});

process.once("SIGTERM", () => {
  void worker.close().finally(() => process.exit(0));
});
await worker.connect();
process.stdout.write(`worker-ready pid=${process.pid}\n`);
