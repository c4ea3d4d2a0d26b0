import { parseArgs } from "node:util";
import { parseDuration } from "./duration.js";

/** The workloads the harness knows. */
export const WORKLOADS = ["W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8"] as const;

/** A workload's name. */
export type WorkloadName = (typeof WORKLOADS)[number];

/** Everything a benchmark run is told, from the command line. */
export interface BenchOptions {
  /** Workloads to run, in order; undefined means every one the deployed SDK supports. */
  workloads: WorkloadName[] | undefined;
  /** Measurements of each workload; figures are reported as their medians. */
  repeat: number;
  /** Share of a workload's size run first, unmeasured, to warm up. */
  warmup: number;
  /** W1 and W5: runs, and runs kept in flight. */
  runs: number;
  inflight: number;
  /** W5: customers the runs are spread over, round robin. */
  customers: number;
  /** W2: steps of the run, and runs measured. */
  steps: number;
  stepReps: number;
  /** W3: sequential runs. */
  latencyRuns: number;
  /** W4: sleeping runs and how long each sleeps. */
  sleepers: number;
  sleep: string;
  /** W6: steps the run starts at once, and runs measured. */
  fanOut: number;
  fanOutReps: number;
  /** W7: sequential steps of the run, and the sleep after them. */
  longSteps: number;
  longSleep: string;
  /** W8: ended runs loaded into the journal before W1 and W3 are measured again. */
  grownRuns: number;
  /** Slots of the worker. */
  capacity: number;
  /** DATABASE_POOL_SIZE of each service. */
  poolSize: number;
  databaseUrl: string;
  natsUrl: string;
  /** Extra file to write the JSON results to. */
  out: string | undefined;
  /** Whether to write bench/results/<timestamp>.json. */
  save: boolean;
  /** Write a V8 CPU profile of every benchmark process next to the results. */
  cpuProf: boolean;
  /** Keep the processes' logs even when everything passed. */
  keepLogs: boolean;
  /** Measure `stepwise dev` (PGlite, the in-process bus, one process) instead of the three services. */
  embedded: boolean;
  /** STEPWISE_RETENTION of the services, such as "1d"; undefined keeps every run. */
  retention: string | undefined;
}

/** The workloads --embedded runs when none are named: a user's first impression. */
export const EMBEDDED_WORKLOADS: readonly WorkloadName[] = ["W1", "W2", "W3"];

/** Usage text of `npm run bench`. */
export const USAGE = `Usage: npm run bench -- [options]

  --workloads W1,...,W8    workloads to run (default: all the deployed SDK supports;
                           W4 and W7 need step.sleep; W8 always runs last, since
                           it leaves the journal grown)
  --repeat N               measurements of each workload; medians are reported (1)
  --warmup F               share of a workload run first, unmeasured (0.25)
  --runs N                 W1, W5: runs of the three-step function (2000)
  --inflight N             W1, W5: runs in flight from the client (200)
  --customers N            W5: customers the runs are spread over, round robin,
                           each limited to 10 runs at once (50)
  --steps N                W2: sequential steps of the run (100)
  --step-reps N            W2: runs measured (5)
  --latency-runs N         W3: sequential one-step runs (200)
  --sleepers N             W4: sleeping runs (10000)
  --sleep D                W4: what each run passes to step.sleep (60s)
  --fan-out N              W6: steps one run starts at once, by one Promise.all (1000)
  --fan-out-reps N         W6: runs measured, one after the other (3)
  --long-steps N           W7: sequential steps of the one long run, before its sleep
                           and replay (10000; at most 99990)
  --long-sleep D           W7: the sleep after them (1s)
  --grown-runs N           W8: ended runs loaded into the journal (batched inserts),
                           then W1 and W3 measured again (1000000)
  --capacity N             worker slots (default: --inflight)
  --pool-size N            DATABASE_POOL_SIZE of each service (10)
  --database-url URL       Postgres (BENCH_DATABASE_URL, or postgres://postgres@127.0.0.1:5432/test)
  --nats-url URL           NATS (BENCH_NATS_URL, or nats://127.0.0.1:4222)
  --out FILE               also write the JSON results to FILE
  --no-save                do not write bench/results/<timestamp>.json
  --cpu-prof               write a CPU profile of every process next to the results
  --keep-logs              keep the processes' logs even when all passed
  --retention D            STEPWISE_RETENTION of the services (30d, 12h, 90m): with W8,
                           W1 and W3 are measured while it deletes the grown runs
                           older than D (default: none, every run is kept)
  --embedded               measure stepwise dev (PGlite, in-process bus, one process)
                           instead of the three services; W1-W3 unless --workloads
                           names others (not W8); no Postgres or NATS is used`;

/** Parses the command line; throws with a message on bad input. */
export function parseBenchOptions(argv: readonly string[]): BenchOptions | "help" {
  const { values } = parseArgs({
    args: [...argv],
    strict: true,
    options: {
      help: { type: "boolean", short: "h" },
      workloads: { type: "string" },
      repeat: { type: "string", default: "1" },
      warmup: { type: "string", default: "0.25" },
      runs: { type: "string", default: "2000" },
      inflight: { type: "string", default: "200" },
      customers: { type: "string", default: "50" },
      steps: { type: "string", default: "100" },
      "step-reps": { type: "string", default: "5" },
      "latency-runs": { type: "string", default: "200" },
      sleepers: { type: "string", default: "10000" },
      sleep: { type: "string", default: "60s" },
      "fan-out": { type: "string", default: "1000" },
      "fan-out-reps": { type: "string", default: "3" },
      "long-steps": { type: "string", default: "10000" },
      "long-sleep": { type: "string", default: "1s" },
      "grown-runs": { type: "string", default: "1000000" },
      capacity: { type: "string" },
      "pool-size": { type: "string", default: "10" },
      "database-url": { type: "string", default: process.env["BENCH_DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/test" },
      "nats-url": { type: "string", default: process.env["BENCH_NATS_URL"] ?? "nats://127.0.0.1:4222" },
      out: { type: "string" },
      "no-save": { type: "boolean", default: false },
      "cpu-prof": { type: "boolean", default: false },
      "keep-logs": { type: "boolean", default: false },
      embedded: { type: "boolean", default: false },
      retention: { type: "string" },
    },
  });
  if (values.help) return "help";
  const int = (name: string, text: string, min: number) => {
    const n = Number(text);
    if (!Number.isInteger(n) || n < min) throw new Error(`--${name}: expected an integer of at least ${min}, got ${JSON.stringify(text)}`);
    return n;
  };
  const warmup = Number(values.warmup);
  if (!(warmup >= 0 && warmup <= 1)) throw new Error(`--warmup: expected a share from 0 to 1, got ${JSON.stringify(values.warmup)}`);
  parseDuration(values.sleep);
  parseDuration(values["long-sleep"]);
  const longSteps = int("long-steps", values["long-steps"], 1);
  // The bench's services allow 100,000 journal entries a run (engine-deployment.ts); a long run has 4 besides its steps.
  if (longSteps > 99_990) throw new Error(`--long-steps: at most 99990, got ${longSteps}`);
  const inflight = int("inflight", values.inflight, 1);
  if (values.retention !== undefined && !/^\d+[mhd]$/.test(values.retention)) {
    throw new Error(`--retention: expected whole minutes, hours or days such as 30d, 12h or 90m, got ${JSON.stringify(values.retention)}`);
  }
  if (values.embedded && values.retention !== undefined) throw new Error("--retention: stepwise dev keeps every run; it has no retention");
  if (values.embedded && values.workloads !== undefined && parseWorkloads(values.workloads).includes("W8")) {
    throw new Error("--embedded: W8 loads the journal in Postgres, which the embedded engine does not use");
  }
  return {
    workloads: values.workloads === undefined ? undefined : parseWorkloads(values.workloads),
    repeat: int("repeat", values.repeat, 1),
    warmup,
    runs: int("runs", values.runs, 1),
    inflight,
    customers: int("customers", values.customers, 1),
    steps: int("steps", values.steps, 1),
    stepReps: int("step-reps", values["step-reps"], 1),
    latencyRuns: int("latency-runs", values["latency-runs"], 1),
    sleepers: int("sleepers", values.sleepers, 1),
    sleep: values.sleep,
    fanOut: int("fan-out", values["fan-out"], 1),
    fanOutReps: int("fan-out-reps", values["fan-out-reps"], 1),
    longSteps,
    longSleep: values["long-sleep"],
    grownRuns: int("grown-runs", values["grown-runs"], 1),
    capacity: values.capacity === undefined ? inflight : int("capacity", values.capacity, 1),
    poolSize: int("pool-size", values["pool-size"], 1),
    databaseUrl: values["database-url"],
    natsUrl: values["nats-url"],
    out: values.out,
    save: !values["no-save"],
    cpuProf: values["cpu-prof"],
    keepLogs: values["keep-logs"],
    embedded: values.embedded,
    retention: values.retention,
  };
}

function parseWorkloads(text: string): WorkloadName[] {
  const names = text.split(",").map((w) => w.trim().toUpperCase()).filter(Boolean);
  for (const n of names) {
    if (!(WORKLOADS as readonly string[]).includes(n)) throw new Error(`--workloads: unknown workload ${JSON.stringify(n)} (known: ${WORKLOADS.join(", ")})`);
  }
  if (names.length === 0) throw new Error("--workloads: name at least one workload");
  // W8 leaves the journal grown: whatever follows it would be measured on that journal.
  const unique = [...new Set(names)] as WorkloadName[];
  return [...unique.filter((n) => n !== "W8"), ...unique.filter((n) => n === "W8")];
}
