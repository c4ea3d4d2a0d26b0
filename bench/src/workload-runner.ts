import type { BenchOptions, WorkloadName } from "./bench-options.js";
import type { BenchSession } from "./bench-session.js";
import type { ClientWorkloadResult } from "./client-workload.js";
import type { ClientRequest } from "./load-client-process.js";
import { growJournal } from "./grown-journal.js";
import { checkJournal } from "./journal-check.js";
import { median, medianOfEach } from "./percentiles.js";
import { sampleProcess } from "./process-usage.js";
import { medianUsage, UsageWindow, type ProcessUsage, type WindowUsage } from "./usage-window.js";
import { allVerified } from "./verification.js";
import { parseDuration } from "./duration.js";
import { CUSTOMER_LIMIT, longRunEntries, THREE_STEP_IDS } from "./workload-shapes.js";
import type { LongRunParams } from "./workloads/long-run.js";

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
  W6: "fan-out",
  W7: "long run",
  W8: "grown journal",
};

/**
 * Runs one workload: a warm-up (options.warmup of its size, unmeasured),
 * then options.repeat measurements, each in a usage window and checked
 * run by run; the report carries the medians.
 */
export async function runWorkload(session: BenchSession, name: WorkloadName, options: BenchOptions): Promise<WorkloadReport> {
  const plan = plans[name](options);
  await plan.prepare?.(session);
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
  /** What the workload needs before it is warmed up, whatever --warmup says. */
  prepare?: (session: BenchSession) => Promise<unknown>;
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
  W6: (o) => {
    const params = { width: o.fanOut, reps: o.fanOutReps };
    return {
      params,
      warmup: (s) => s.callClient({ kind: "fan-out", params: { width: share(o.fanOut, o.warmup), reps: 1 } }),
      measure: async (s) => withPeaks(await measureInClient(s, { kind: "fan-out", params }, o.fanOut)),
    };
  },
  W7: (o) => {
    const params = { steps: o.longSteps, sleepMs: parseDuration(o.longSleep) };
    return {
      params: { steps: o.longSteps, sleep: o.longSleep },
      warmup: (s) => s.callClient({ kind: "long-run", params: { ...params, steps: share(o.longSteps, o.warmup) } }),
      measure: (s) => measureLongRun(s, params),
    };
  },
  W8: (o) => {
    const throughput = { runs: o.runs, inflight: o.inflight };
    return {
      params: { grownRuns: o.grownRuns, ...throughput, latencyRuns: o.latencyRuns },
      prepare: (s) => grow(s, o),
      warmup: (s) => s.callClient({ kind: "latency", params: { runs: share(o.latencyRuns, o.warmup) } }),
      measure: async (s) => {
        const before = o.retention ? await countRuns(s) : 0;
        const w1 = await measureInClient(s, { kind: "throughput", params: throughput }, THREE_STEP_IDS.length);
        const w3 = await measureInClient(s, { kind: "latency", params: { runs: o.latencyRuns } }, 1);
        const m = joinMeasurements(w1, w3);
        if (!o.retention) return m;
        // What retention deleted meanwhile (the measured runs were added): the background W1 and W3 shared the journal with.
        const made = w1.verification.expected + w3.verification.expected;
        const deleted = before + made - (await countRuns(s));
        return { ...m, figures: { ...m.figures, retentionRunsDeletedPerSecond: deleted / m.usage.wallSeconds } };
      },
    };
  },
};

/**
 * W8's preparation: runs of the three-step function (W1's warm-up, which
 * also gives the ended run the load copies), then `grownRuns` copies of one
 * of them loaded into the journal.
 */
async function grow(session: BenchSession, o: BenchOptions): Promise<void> {
  const pool = session.pool;
  if (!pool) throw new Error("W8 loads the journal in Postgres: it does not run on the embedded engine");
  await session.callClient({ kind: "throughput", params: { runs: share(o.runs, Math.max(o.warmup, 0.05)), inflight: o.inflight } });
  const { rows } = await pool.query<{ id: string }>(
    "SELECT id FROM runs WHERE function_id = 'three-steps' AND status = 'COMPLETED' ORDER BY ended_at DESC LIMIT 1",
  );
  if (!rows[0]) throw new Error("W8: no completed run of the three-step function to copy");
  let told = 0;
  const grown = await growJournal(pool, { runId: rows[0].id }, o.grownRuns, {
    onProgress: (n) => {
      if (n - told >= 200_000 || n === o.grownRuns) process.stderr.write(`[bench] W8: ${(told = n)} of ${o.grownRuns} ended runs loaded\n`);
    },
  });
  process.stderr.write(`[bench] W8: loaded ${grown.runs} runs and ${grown.steps} steps in ${grown.seconds.toFixed(0)} s\n`);
}

async function countRuns(session: BenchSession): Promise<number> {
  const { rows } = await session.pool!.query<{ n: string }>("SELECT count(*) AS n FROM runs");
  return Number(rows[0]?.n ?? 0);
}

/** Two measurements made one after the other as one: figures side by side, runs and usage added up. */
function joinMeasurements(a: Measurement, b: Measurement): Measurement {
  const processes: Record<string, ProcessUsage> = {};
  for (const name of new Set([...Object.keys(a.usage.processes), ...Object.keys(b.usage.processes)])) {
    const x = a.usage.processes[name];
    const y = b.usage.processes[name];
    processes[name] = {
      cpuSeconds: (x?.cpuSeconds ?? 0) + (y?.cpuSeconds ?? 0),
      peakRssMiB: Math.max(x?.peakRssMiB ?? 0, y?.peakRssMiB ?? 0),
    };
  }
  const shared: Record<string, number> = {};
  for (const k of new Set([...Object.keys(a.usage.shared), ...Object.keys(b.usage.shared)])) shared[k] = (a.usage.shared[k] ?? 0) + (b.usage.shared[k] ?? 0);
  const wallSeconds = a.usage.wallSeconds + b.usage.wallSeconds;
  const va = a.verification;
  const vb = b.verification;
  return {
    figures: { ...a.figures, ...b.figures },
    verification: {
      expected: va.expected + vb.expected,
      verified: va.verified + vb.verified,
      lost: va.lost + vb.lost,
      wrong: va.wrong + vb.wrong,
      problems: [...va.problems, ...vb.problems],
      journal: [...va.journal, ...vb.journal],
    },
    reads: a.reads + b.reads,
    sends: a.sends + b.sends,
    usage: {
      wallSeconds,
      processes,
      shared,
      machineBusyCores: (a.usage.machineBusyCores * a.usage.wallSeconds + b.usage.machineBusyCores * b.usage.wallSeconds) / wallSeconds,
      peaksAreWindowed: a.usage.peaksAreWindowed && b.usage.peaksAreWindowed,
    },
    ok: a.ok && b.ok,
  };
}

/** The worker's and the executor's peak resident sets in the window, as figures of the measurement. */
function withPeaks(m: Measurement): Measurement {
  const figures = { ...m.figures };
  for (const name of ["worker", "executor"]) {
    const peak = m.usage.processes[name]?.peakRssMiB;
    if (peak !== undefined) figures[`peakRssMiB.${name}`] = peak;
  }
  return { ...m, figures };
}

/** When W7 samples the worker's and the executor's resident sets: shares of the run's steps executed. */
const LONG_RUN_MARKS = [0.2, 0.9] as const;

/**
 * W7: the long run, watched from outside. While the client waits for it,
 * the worker's counter of step bodies is polled, and the resident sets of
 * the worker and the executor are sampled when it passes 20% and 90% of
 * the steps: their growth over that span, against the journal's own size
 * (about 100 bytes a step), shows whether memory grows with the steps.
 */
async function measureLongRun(session: BenchSession, params: LongRunParams): Promise<Measurement> {
  const pids = session.pids();
  const watched = new Map([...pids].filter(([name]) => name === "worker" || name === "executor"));
  const base = (await session.sleepProgress()).longRunSteps;
  const window = UsageWindow.start(pids);
  let settled = false;
  const pending = session.callClient<ClientWorkloadResult>({ kind: "long-run", params });
  pending.then(
    () => (settled = true),
    () => (settled = true),
  );
  const samples: Record<string, number>[] = [];
  while (!settled && samples.length < LONG_RUN_MARKS.length) {
    const done = (await session.sleepProgress()).longRunSteps - base;
    if (done >= LONG_RUN_MARKS[samples.length]! * params.steps) samples.push(await residentSets(watched, 3, 100));
    else await new Promise((r) => setTimeout(r, 50));
  }
  const result = await pending;
  const usage = window.finish();
  const extra: Record<string, number> = {};
  if (samples.length === LONG_RUN_MARKS.length) {
    for (const name of watched.keys()) extra[`rssGrowthMiB.${name}`] = samples[1]![name]! - samples[0]![name]!;
  }
  const m = await finishMeasurement(session, result, usage, longRunEntries(params.steps), extra);
  return withPeaks(m);
}

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
  // The embedded engine's PGlite is open in its own process only: its runs are verified through the API alone.
  const journal = session.pool ? await checkJournal(session.pool, runIds, stepsPerRun) : [];
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
async function residentSets(pids: ReadonlyMap<string, number>, samples: number, everyMs = 500): Promise<Record<string, number>> {
  const seen = new Map<string, number[]>();
  for (let i = 0; i < samples; i++) {
    if (i > 0) await new Promise((r) => setTimeout(r, everyMs));
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
