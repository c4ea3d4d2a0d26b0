/**
 * The shape of each workload's function, shared by the worker that runs it
 * and the client that checks its outputs: event names, function ids, what
 * each step returns and what each run must return.
 */

/** The app every benchmark function belongs to. */
export const BENCH_APP_ID = "bench";

/** Event names that trigger the benchmark functions. */
export const EVENTS = {
  threeSteps: "bench.three-steps",
  limitedThreeSteps: "bench.three-steps-limited",
  manySteps: "bench.many-steps",
  oneStep: "bench.one-step",
  sleep: "bench.sleep",
  fanOut: "bench.fan-out",
  longRun: "bench.long-run",
  probe: "bench.probe",
} as const;

/** What every step of the benchmark returns: about 100 bytes of JSON. */
export interface StepOutput {
  run: number;
  step: string;
  tag: string;
  pad: string;
}

const PAD = "p".repeat(48);

/** The output of step `step` of run number `run`. */
export function stepOutput(run: number, step: string): StepOutput {
  return { run, step, tag: `${step}-${run}`, pad: PAD };
}

/** Event data of the three-step function (W1). */
export interface ThreeStepsEvent {
  run: number;
}

/** What a three-step run returns: the tags its steps returned, in order. */
export interface ThreeStepsOutput {
  run: number;
  tags: string[];
}

/** The step ids of the three-step function, in order. */
export const THREE_STEP_IDS = ["a", "b", "c"] as const;

/** What run number `run` of the three-step function must return. */
export function expectedThreeSteps(run: number): ThreeStepsOutput {
  return { run, tags: THREE_STEP_IDS.map((s) => stepOutput(run, s).tag) };
}

/** W5: most runs of one customer holding a worker slot at once. */
export const CUSTOMER_LIMIT = 10;

/** W5: the concurrency key of the limited three-step function, a CEL expression over the run's event. */
export const CUSTOMER_KEY = "event.data.customer";

/** Event data of the limited three-step function (W5): W1's, and the customer whose limit the run counts against. */
export interface LimitedThreeStepsEvent extends ThreeStepsEvent {
  customer: string;
}

/** W5: the customer of the i-th run of a measurement, round robin over `customers`. */
export function customerOf(i: number, customers: number): string {
  return `customer-${i % customers}`;
}

/** Event data of the many-step function (W2). */
export interface ManyStepsEvent {
  run: number;
  steps: number;
}

/** What a many-step run returns. Step i (id "step", occurrence i) returns stepOutput(run, `s${i}`). */
export interface ManyStepsOutput {
  run: number;
  steps: number;
  lastTag: string;
}

/** What run number `run` of the many-step function with `steps` steps must return. */
export function expectedManySteps(run: number, steps: number): ManyStepsOutput {
  return { run, steps, lastTag: stepOutput(run, `s${steps - 1}`).tag };
}

/** Event data of the one-step function (W3). */
export interface OneStepEvent {
  run: number;
}

/** What a one-step run returns. */
export interface OneStepOutput {
  run: number;
  tag: string;
}

/** What run number `run` of the one-step function must return. */
export function expectedOneStep(run: number): OneStepOutput {
  return { run, tag: stepOutput(run, "only").tag };
}

/** Event data of the sleeping function (W4). */
export interface SleepEvent {
  run: number;
  /** The duration of the sleep, as given to the bench, such as "60s". */
  sleep: string;
  /** The same duration in milliseconds, from which the run computes its due time. */
  sleepMs: number;
}

/**
 * What a sleeping run returns: how late the step after the sleep started,
 * after the sleep's due time (fixed in a step just before the sleep).
 */
export interface SleepOutput {
  run: number;
  latenessMs: number;
}

/** Event data of the fan-out function (W6). */
export interface FanOutEvent {
  run: number;
  /** Steps started at once, by one Promise.all. */
  width: number;
}

/** What a fan-out run returns. Step i (id "leaf", occurrence i) returns stepOutput(run, `l${i}`). */
export interface FanOutOutput {
  run: number;
  width: number;
  /** How many of the results came back to the handler in the order their steps were started. */
  inOrder: number;
}

/** What run number `run` of the fan-out function of `width` steps must return. */
export function expectedFanOut(run: number, width: number): FanOutOutput {
  return { run, width, inOrder: width };
}

/** Event data of the long-run function (W7). */
export interface LongRunEvent {
  run: number;
  /** Sequential steps before the sleep. */
  steps: number;
  /** The sleep after them, in milliseconds: the run is started again and replays its whole journal. */
  sleepMs: number;
}

/**
 * What a long run returns: its result, and times fixed in journaled steps
 * (so the replay after the sleep returns the first execution's).
 */
export interface LongRunOutput {
  run: number;
  steps: number;
  lastTag: string;
  /** Date.now() in the step before the sequential steps. */
  startedAtMs: number;
  /** The sleep's due time, fixed in the step after the sequential steps (sleepMs after it ran). */
  dueAtMs: number;
  /** Date.now() in the first step after the sleep, which runs only once the journal was replayed. */
  resumedAtMs: number;
}

/** The journal entries of a long run of `steps` steps: start, the steps, the due time, the sleep, the step after it. */
export function longRunEntries(steps: number): number {
  return steps + 4;
}

/** What the probe function returns: the step tools the worker's SDK offers. */
export interface ProbeOutput {
  sleep: boolean;
}
