import { parseArgs } from "node:util";
import { parseDuration } from "../duration.js";
import { FAULT_KINDS, type FaultKind } from "./fault-kinds.js";

/** Everything a chaos run is told, from the command line. */
export interface ChaosOptions {
  /** How long events are sent and faults injected, ms. */
  durationMs: number;
  /** Events sent per second, steadily. */
  rate: number;
  /** Faults per minute, on average. */
  faultRate: number;
  /** The kinds of fault to inject. */
  faults: FaultKind[];
  /** Seed of the fault schedule (and of every random choice of the orchestrator). */
  seed: number;
  /** STEPWISE_LEASE_MS of the services. */
  leaseMs: number;
  /** STEPWISE_RECONCILE_INTERVAL_MS and STEPWISE_HEARTBEAT_MS. */
  reconcileMs: number;
  heartbeatMs: number;
  /** How long, after the duration, to wait at most for every run to end. */
  settleMs: number;
  executors: number;
  schedulers: number;
  ingests: number;
  workers: number;
  /** Slots of each worker. */
  capacity: number;
  /** How long each run sleeps between s2 and s3, ms. */
  sleepMs: number;
  /** Range of the time each step body takes, ms. */
  stepWorkMs: [number, number];
  out: string | undefined;
  /** Folder for the logs; undefined: a temporary folder, removed when everything passed. */
  logDir: string | undefined;
  keepLogs: boolean;
}

/** Usage text of `npm run chaos`. */
export const USAGE = `Usage: npm run chaos -- [options]

  --duration D        how long to send events and inject faults (10m)
  --rate N            events per second, sent steadily (15)
  --fault-rate N      faults per minute, on average (10)
  --faults K,...      kinds of fault (default: all): ${FAULT_KINDS.join(", ")}
  --seed N            seed of the fault schedule (default: random, printed)
  --lease D           STEPWISE_LEASE_MS of the services (3s)
  --reconcile D       STEPWISE_RECONCILE_INTERVAL_MS (500ms)
  --heartbeat D       STEPWISE_HEARTBEAT_MS (1s)
  --settle D          after the duration, longest wait for every run to end (120s)
  --executors N       executor processes (2)
  --schedulers N      scheduler processes (2)
  --ingests N         ingest processes (2)
  --workers N         worker processes, spread over the executors (2)
  --capacity N        slots of each worker (50)
  --sleep D           how long each run sleeps in its middle (1s)
  --step-work A-B     range of the time a step body takes, ms (5-40)
  --out FILE          write the figures as JSON to FILE
  --log-dir DIR       folder for every process's log (default: a temporary
                      folder, removed when every check passed)
  --keep-logs         keep the temporary log folder even when every check passed`;

/** Parses the command line; throws with a message on bad input. */
export function parseChaosOptions(argv: readonly string[]): ChaosOptions | "help" {
  const { values } = parseArgs({
    args: [...argv],
    strict: true,
    options: {
      help: { type: "boolean", short: "h" },
      duration: { type: "string", default: "10m" },
      rate: { type: "string", default: "15" },
      "fault-rate": { type: "string", default: "10" },
      faults: { type: "string" },
      seed: { type: "string" },
      lease: { type: "string", default: "3s" },
      reconcile: { type: "string", default: "500ms" },
      heartbeat: { type: "string", default: "1s" },
      settle: { type: "string", default: "120s" },
      executors: { type: "string", default: "2" },
      schedulers: { type: "string", default: "2" },
      ingests: { type: "string", default: "2" },
      workers: { type: "string", default: "2" },
      capacity: { type: "string", default: "50" },
      sleep: { type: "string", default: "1s" },
      "step-work": { type: "string", default: "5-40" },
      out: { type: "string" },
      "log-dir": { type: "string" },
      "keep-logs": { type: "boolean", default: false },
    },
  });
  if (values.help) return "help";
  const int = (name: string, text: string, min: number) => {
    const n = Number(text);
    if (!Number.isInteger(n) || n < min) throw new Error(`--${name}: expected an integer of at least ${min}, got ${JSON.stringify(text)}`);
    return n;
  };
  const positive = (name: string, text: string) => {
    const n = Number(text);
    if (!(n > 0) || !Number.isFinite(n)) throw new Error(`--${name}: expected a positive number, got ${JSON.stringify(text)}`);
    return n;
  };
  const duration = (name: string, text: string) => {
    try {
      const ms = parseDuration(text);
      if (ms <= 0) throw new Error("must be positive");
      return Math.round(ms);
    } catch (err) {
      throw new Error(`--${name}: ${(err as Error).message}`);
    }
  };
  const work = /^(\d+)-(\d+)$/.exec(values["step-work"]);
  if (!work || Number(work[1]) > Number(work[2])) throw new Error(`--step-work: expected A-B in ms with A <= B, got ${JSON.stringify(values["step-work"])}`);
  const executors = int("executors", values.executors, 1);
  const workers = int("workers", values.workers, 1);
  return {
    durationMs: duration("duration", values.duration),
    rate: positive("rate", values.rate),
    faultRate: Number(values["fault-rate"]) === 0 ? 0 : positive("fault-rate", values["fault-rate"]),
    faults: values.faults === undefined ? [...FAULT_KINDS] : parseFaults(values.faults),
    seed: values.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : int("seed", values.seed, 0),
    leaseMs: duration("lease", values.lease),
    reconcileMs: duration("reconcile", values.reconcile),
    heartbeatMs: duration("heartbeat", values.heartbeat),
    settleMs: duration("settle", values.settle),
    executors,
    schedulers: int("schedulers", values.schedulers, 1),
    ingests: int("ingests", values.ingests, 1),
    workers: Math.max(workers, 1),
    capacity: int("capacity", values.capacity, 1),
    sleepMs: duration("sleep", values.sleep),
    stepWorkMs: [Number(work[1]), Number(work[2])],
    out: values.out,
    logDir: values["log-dir"],
    keepLogs: values["keep-logs"],
  };
}

function parseFaults(text: string): FaultKind[] {
  const names = text.split(",").map((w) => w.trim()).filter(Boolean);
  for (const n of names) {
    if (!(FAULT_KINDS as readonly string[]).includes(n)) throw new Error(`--faults: unknown kind ${JSON.stringify(n)} (known: ${FAULT_KINDS.join(", ")})`);
  }
  if (names.length === 0) throw new Error("--faults: name at least one kind");
  return [...new Set(names)] as FaultKind[];
}
