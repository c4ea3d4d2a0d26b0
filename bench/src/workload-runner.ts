import type { BenchOptions, WorkloadName } from "./bench-options.js";
import type { BenchSession } from "./bench-session.js";
import type { ClientWorkloadResult } from "./client-workload.js";
import type { ClientRequest } from "./load-client-process.js";
import { checkJournal } from "./journal-check.js";
import { median, medianOfEach } from "./percentiles.js";
import { sampleProcess } from "./process-usage.js";
import { medianUsage, UsageWindow, type ProcessUsage, type WindowUsage } from "./usage-window.js";
import { allVerified } from "./verification.js";
import { parseDuration } from "./duration.js";
import { CUSTOMER_LIMIT, THREE_STEP_IDS } from "./workload-shapes.js";

/** One measurement of a workload. */
export interface Measurement {
  figures: Record<string, number>;
  /** How the runs turned out, through the API (lost, wrong) and in the journal. */
  verification: { expected: number; verified: number; lost: number; wrong: number; problems: string[]; journal: string[] };
  /** Reads the client made to see runs end, and Send calls it made. */
  reads: number;
  sends: number;
  usage: WindowUsage;
  /** W5: what the worker saw of the concurrency limit. */
  limit?: LimitCheck;
  /** Whether every run was verified and the journal is sound (W5: and no customer went over its limit). */
  ok: boolean;
}

/** W5: the most handler bodies each customer had executing at once in the worker, against the limit. */
export interface LimitCheck {
  limit: number;
  /** Peak per customer during the measurement. */
  peaks: Record<string, number>;
  /** Each customer over the limit, during the measurement or before it. */
  exceeded: string[];
}

/** A workload's measurements and their medians. */
export interface WorkloadReport {
  name: WorkloadName;
  title: string;
  params: Record<string, number | string>;
  /** Median of each figure over the repetitions. */
  figures: Record<string, number>;
  /** Median CPU seconds and peak RSS of each process over the repetitions. */
  usage: Record<string, ProcessUsage>;
  repetitions: Measurement[];
  ok: boolean;
}

/** Titles of the workloads, for the table. */
export const TITLES: Record<WorkloadName, string> = {
  W1: "throughput",
  W2: "step overhead",
  W3: "latency",
  W4: "idle cost",
  W5: "throughput, limit per customer",
};

/**
 * Runs one workload: a warm-up (options.warmup of its size, unmeasured),
 * then options.repeat measurements, each in a usage window and checked
 * run by run; the report carries the medians.
 */
export async function runWorkload(session: BenchSession, name: WorkloadName, options: BenchOptions): Promise<WorkloadReport> {
  const plan = plans[name](options);
  if (options.warmup > 0) await plan.warmup(session);
  const repetitions: Measurement[] = [];
  for (let i = 0; i < options.repeat; i++) repetitions.push(await plan.measure(session));
  return {
    name,
    title: TITLES[name],
    params: plan.params,
    figures: medianOfEach(repetitions.map((r) => r.figures)),
    usage: medianUsage(repetitions.map((r) => r.usage.processes)),
    repetitions,
    ok: repetitions.every((r) => r.ok),
  };
}

interface Plan {
  params: Record<string, number | string>;
  warmup: (session: BenchSession) => Promise<unknown>;
  measure: (session: BenchSession) => Promise<Measurement>;
}

const share = (n: number, f: number) => Math.max(1, Math.ceil(n * f));

const plans: Record<WorkloadName, (o: BenchOptions) => Plan> = {
  W1: (o) => ({
    params: { runs: o.runs, inflight: o.inflight, stepsPerRun: THREE_STEP_IDS.length },
    warmup: (s) => s.callClient({ kind: "throughput", params: { runs: share(o.runs, o.warmup), inflight: o.inflight } }),
    measure: (s) => measureInClient(s, { kind: "throughput", params: { runs: o.runs, inflight: o.inflight } }, THREE_STEP_IDS.length),
  }),
  W2: (o) => ({
    params: { steps: o.steps, reps: o.stepReps },
    warmup: (s) => s.callClient({ kind: "step-overhead", params: { steps: o.steps, reps: 1 } }),
    measure: (s) => measureInClient(s, { kind: "step-overhead", params: { steps: o.steps, reps: o.stepReps } }, o.steps),
  }),
  W3: (o) => ({
    params: { runs: o.latencyRuns },
    warmup: (s) => s.callClient({ kind: "latency", params: { runs: share(o.latencyRuns, o.warmup) } }),
    measure: (s) => measureInClient(s, { kind: "latency", params: { runs: o.latencyRuns } }, 1),
  }),
  W4: (o) => ({
    params: { runs: o.sleepers, sleep: o.sleep },
    // A few short sleeps warm the timer path; the other workloads warmed the rest.
    warmup: (s) => sleepers(s, Math.min(100, share(o.sleepers, o.warmup)), "1s", false),
    measure: (s) => sleepers(s, o.sleepers, o.sleep, true),
  }),
  W5: (o) => {
    const params = { runs: o.runs, inflight: o.inflight, customers: o.customers };
    return {
      params: { ...params, stepsPerRun: THREE_STEP_IDS.length, limit: CUSTOMER_LIMIT },
      warmup: (s) => s.callClient({ kind: "throughput", params: { ...params, runs: share(o.runs, o.warmup) } }),
      measure: (s) => measureLimited(s, params),
    };
  },
};

async function measureInClient(session: BenchSession, req: ClientRequest, stepsPerRun: number): Promise<Measurement> {
  const window = UsageWindow.start(session.pids());
  const result = await session.callClient<ClientWorkloadResult>(req);
  const usage = window.finish();
  return finishMeasurement(session, result, usage, stepsPerRun, {});
}

async function finishMeasurement(
  session: BenchSession,
  result: ClientWorkloadResult,
  usage: WindowUsage,
  stepsPerRun: number | undefined,
  extraFigures: Record<string, number>,
): Promise<Measurement> {
  const { runIds, ...verification } = result.verification;
  const journal = await checkJournal(session.pool, runIds, stepsPerRun);
  return {
    figures: { ...result.figures, ...extraFigures },
    verification: { ...verification, journal },
    reads: result.reads,
    sends: result.sends,
    usage,
    ok: allVerified(result.verification) && journal.length === 0,
  };
}

/**
 * W5: W1's measurement on the limited function, between two readings of
 * the worker's peaks per customer; any customer over the limit, in the
 * window or before it (the warm-up), fails the measurement.
 */
async function measureLimited(session: BenchSession, params: { runs: number; inflight: number; customers: number }): Promise<Measurement> {
  const before = overLimit(await session.runningPeaks(), "before the measurement");
  const m = await measureInClient(session, { kind: "throughput", params }, THREE_STEP_IDS.length);
  const peaks = await session.runningPeaks();
  const exceeded = [...before, ...overLimit(peaks, "")];
  const peakValues = Object.values(peaks);
  return {
    ...m,
    figures: { ...m.figures, peakRunningPerCustomer: peakValues.length > 0 ? Math.max(...peakValues) : 0 },
    limit: { limit: CUSTOMER_LIMIT, peaks, exceeded },
    ok: m.ok && exceeded.length === 0,
  };
}

function overLimit(peaks: Record<string, number>, when: string): string[] {
  return Object.entries(peaks)
    .filter(([, peak]) => peak > CUSTOMER_LIMIT)
    .map(([customer, peak]) => `${customer} had ${peak} handler bodies executing at once${when ? ` ${when}` : ""}, over its limit of ${CUSTOMER_LIMIT}`);
}

/** Resident sets (VmRSS) of every process, in MiB: the median of a few samples. */
async function residentSets(pids: ReadonlyMap<string, number>, samples: number): Promise<Record<string, number>> {
  const seen = new Map<string, number[]>();
  for (let i = 0; i < samples; i++) {
    if (i > 0) await new Promise((r) => setTimeout(r, 500));
    for (const [name, pid] of pids) seen.set(name, [...(seen.get(name) ?? []), (sampleProcess(pid)?.rssBytes ?? Number.NaN) / 2 ** 20]);
  }
  return Object.fromEntries([...seen].map(([name, values]) => [name, median(values)]));
}

/**
 * W4: sends `runs` sleeping runs, waits until the worker ran the step before
 * the sleep of every one, lets the engine settle, samples each process's RSS
 * while they sleep (against a sample before sending), waits until the worker
 * ran the step after the sleep of every one, then has the client read and
 * check every run and the lateness they measured.
 */
async function sleepers(session: BenchSession, runs: number, sleep: string, measured: boolean): Promise<Measurement> {
  const sleepMs = parseDuration(sleep);
  const pids = session.pids();
  const rssBefore = measured ? await residentSets(pids, 3) : {};
  const base = await session.sleepProgress();
  const window = UsageWindow.start(pids);
  const t0 = performance.now();
  await session.callClient({ kind: "sleepers-send", params: { runs, sleep } });
  await waitForProgress(session, (p) => p.asleep - base.asleep >= runs, sleepMs + 300_000, "every run to reach its sleep");
  const allAsleepSeconds = (performance.now() - t0) / 1000;
  let rssSleeping: Record<string, number> = {};
  let wokeWhileSampling = 0;
  if (measured) {
    await new Promise((r) => setTimeout(r, 2_000));
    rssSleeping = await residentSets(pids, 5);
    wokeWhileSampling = (await session.sleepProgress()).woke - base.woke;
  }
  await waitForProgress(session, (p) => p.woke - base.woke >= runs, sleepMs + 600_000, "every run to wake");
  const result = await session.callClient<ClientWorkloadResult>({ kind: "sleepers-collect", timeoutMs: 120_000 });
  const usage = window.finish();
  const added: Record<string, number> = {};
  for (const name of Object.keys(rssSleeping)) added[`addedRssMiB.${name}`] = rssSleeping[name]! - rssBefore[name]!;
  return finishMeasurement(session, result, usage, undefined, { ...added, allAsleepSeconds, wokeWhileSampling });
}

async function waitForProgress(
  session: BenchSession,
  done: (p: { asleep: number; woke: number }) => boolean,
  timeoutMs: number,
  what: string,
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!done(await session.sleepProgress())) {
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}
