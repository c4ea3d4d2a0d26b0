import type { ErrorData, RunStatusName } from "@stepwise/proto";
import type { Admission } from "./concurrency-slots.js";

// The journal's types: what the stores take and give, shared by every
// module of journal/ and by the services.

/** Where a run is in its life, as stored: the contract's status names. */
export type RunStatus = RunStatusName;

/** An error as journaled: the SDK's serialised form, as the contract carries it. */
export type StoredError = ErrorData;

/** A function as registered by a worker. */
export interface FunctionRegistration {
  id: string;
  name: string;
  /** Names of the events that trigger the function, for every event of the name. */
  eventTriggers: string[];
  /** Event triggers with a CEL condition over the event. */
  conditionalTriggers?: Array<{ event: string; condition: string }>;
  /** Cron triggers, with the first tick each fires. */
  cronTriggers?: Array<{ cron: string; timezone: string; firstAt: Date }>;
  /** What every new run is armed with: its timeouts and cancelOn rules. */
  runRules?: RunRules;
  /**
   * The full declared config, kept for display; `onFailure` names the
   * function that handles its failed runs.
   */
  config: unknown;
}

/** A function's timeouts and cancelOn rules, validated. */
export interface RunRules {
  startMs?: number | undefined;
  finishMs?: number | undefined;
  cancelOn: CancelOnRule[];
  /** Concurrency limits, at most 2: a run takes a slot of each (concurrency-slots.ts). */
  concurrency?: Array<{ limit: number; key: string; scope: "function" | "app" }> | undefined;
  /** At most `limit` first starts per `periodMs` per key, `burst` more at once. */
  throttle?: { limit: number; periodMs: number; burst: number; key: string } | undefined;
  /** CEL over `event`: seconds a run goes ahead in the queue of runs waiting to start. */
  priority?: string | undefined;
  /** Whether a run starts at all: idempotency, rate limit, singleton (concurrency-slots.ts). */
  admission?: Admission | undefined;
  /** Gathers the function's events into runs: debounce or batchEvents (event-windows.ts). */
  window?: EventWindowRule | undefined;
}

/**
 * How a function gathers its events into runs, per key value (CEL over
 * the event; "" for one key): debounce makes one run once `periodMs`
 * passed with no new event (at most `timeoutMs` after the first), batch
 * one run of up to `maxSize` events or fewer `timeoutMs` after the first.
 */
export type EventWindowRule =
  | { kind: "debounce"; periodMs: number; timeoutMs?: number | undefined; key: string }
  | { kind: "batch"; maxSize: number; timeoutMs: number; key: string };

/** A function whose trigger on an event gathers it into a window (debounce, batchEvents). */
export interface GatheringTrigger {
  appId: string;
  functionId: string;
  /** The trigger fires when any of them is true; null: on every event of the name. */
  conditions: string[] | null;
  window: EventWindowRule;
}

/** One cancelOn rule: an event of the name whose condition holds cancels the run. */
export interface CancelOnRule {
  event: string;
  /** CEL over `event` (the run's) and `async` (the candidate); null for any event of the name. */
  condition: string | null;
  /** The condition's indexable equality, when it has one. */
  equality: { eventPath: string[]; asyncPath: string[] } | undefined;
  /** How long after the run's event the rule holds; undefined: until the run ends. */
  timeoutMs?: number | undefined;
}

/** A function whose trigger on an event has conditions to evaluate. */
export interface ConditionalTrigger {
  appId: string;
  functionId: string;
  /** The trigger fires when any of them is true. */
  conditions: string[];
}

/** What recording an event did. */
export interface RecordedEvent {
  /** Runs of the functions whose triggers have no condition (or still QUEUED on a redelivery). */
  runs: PublishedRunRef[];
  /** Triggers whose conditions decide; their runs are created by createRuns. */
  conditional: ConditionalTrigger[];
  /** Triggers of functions that gather events into windows (gatherEvents), instead of a run per event. */
  gathering: GatheringTrigger[];
  /** When the event was first stored, by the database's clock. */
  storedAtMs: number;
}

/** An accepted event as the scheduler persists it. */
export interface EventInput {
  id: string;
  name: string;
  /** The payload as JSON text (an object). */
  dataJson: string;
  tsMs: number;
  receivedAtMs: number;
  /** W3C traceparent of the span the event's runs continue (runtime/tracing.ts); none when undefined. */
  traceParent?: string | undefined;
  /** The one app whose functions the event triggers (sent with an event key of that app); every app when undefined. */
  appId?: string | undefined;
}

/** A run that needs its work published. */
export interface RunRef {
  runId: string;
  appId: string;
  functionId: string;
}

/** A run to publish, with what markPublished needs afterwards. */
export type PublishedRunRef = RunRef & PublishedRun;

/** A run whose work was published, to confirm with markPublished. */
export interface PublishedRun {
  runId: string;
  /** The lease the run had when its work was published: a later hand-back is not confirmed by it. */
  lease: number;
}

/**
 * How long a QUEUED run whose work is on the bus waits before the
 * reconciler publishes it once more, in case the bus lost the message (a
 * wiped stream, a host crash before NATS synced it).
 */
export const DEFAULT_QUEUED_BACKSTOP_MS = 3_600_000;

/** One journal entry as handed to a worker: JSON text or an error. */
export type JournalEntry =
  | { stepKey: string; outputJson: string; error?: undefined }
  | { stepKey: string; outputJson?: undefined; error: StoredError };

/** What an executor gets when it claims a run. */
export interface ClaimedRun extends RunRef {
  lease: number;
  event: { id: string; name: string; dataJson: string; tsMs: number };
  /** W3C traceparent of the span the run continues; undefined when it belongs to no trace. */
  traceParent?: string | undefined;
  /** Every event of a run made of an event window (debounce, batchEvents), in the order received; undefined for others. */
  events?: Array<{ id: string; name: string; dataJson: string; tsMs: number }> | undefined;
  journal: JournalEntry[];
  /** Attempt number of the handler, from 1. */
  attempt: number;
  /** Failed attempts of steps still being retried, by step key. */
  stepAttempts: Record<string, number>;
  /** When the next attempt is due, by step key ("" for the handler), in ms since the epoch. */
  retryAtMs: Record<string, number>;
  /** The run's wake-up count when claimed; suspendRun compares it. */
  wakes: number;
  /** When the run was created, in ms since the epoch (whole ms, as the journal's times read back). */
  createdAtMs: number;
  /** When a worker first started the run (this claim, for a first claim), in ms since the epoch. */
  startedAtMs: number;
  /** How many runs the event had started at the claim: all of them, since they are created before any is claimed. */
  eventRuns: number;
  /** Made from another run by a rerun or a replay. */
  derived: boolean;
}

/** A failed attempt that will be retried. */
export interface AttemptRecord {
  runId: string;
  lease: number;
  /** '' for the handler itself. */
  stepKey: string;
  stepId: string;
  attempt: number;
  startedAtMs: number;
  endedAtMs: number;
  error: StoredError;
  retryAtMs: number;
}

/** A step result to journal. */
export interface StepRecord {
  runId: string;
  lease: number;
  stepKey: string;
  stepId: string;
  attempt: number;
  startedAtMs: number;
  endedAtMs: number;
  outputJson?: string | undefined;
  error?: StoredError | undefined;
}

/**
 * The outcome of journaling a step: written now; already journaled by an
 * earlier execution (first write wins, the stored result is returned); or
 * refused because this execution no longer holds the run.
 */
export type JournalOutcome =
  | { kind: "journaled" }
  | { kind: "existing"; entry: JournalEntry }
  | { kind: "lease-lost" };

/** A run as read back through the RunService. */
export interface RunView {
  id: string;
  appId: string;
  functionId: string;
  status: RunStatus;
  lease: number;
  createdAt: Date;
  startedAt: Date | null;
  endedAt: Date | null;
  output: unknown;
  hasOutput: boolean;
  error: StoredError | null;
  event: { id: string; name: string; data: unknown; ts: Date };
  /** The run this one was made from by a rerun or a replay. */
  originRunId: string | null;
  /** For a replay, the first step it executed again. */
  originStepKey: string | null;
  /** The runs made from this one, oldest first; empty in lists. */
  derivedRunIds: string[];
  /** The run that invoked this one (step.invoke) and its step; null in lists and for a run not invoked. */
  invokedBy?: { runId: string; stepKey: string } | null | undefined;
  /** What a WAITING run waits for now, by step key; empty in lists and in other statuses. */
  awaits?: AwaitView[] | undefined;
  steps: StepView[];
  /** Failed attempts that were retried, of steps and of the handler (key ''). */
  failedAttempts: AttemptView[];
}

/** A failed, retried attempt as read back. */
export interface AttemptView {
  key: string;
  id: string;
  attempt: number;
  startedAt: Date | null;
  endedAt: Date | null;
  error: StoredError;
  retryAt: Date;
}

/** Something a WAITING run waits for, as read back from its timers, waits and invocations. */
export interface AwaitView {
  /** '' for the handler's retry. */
  key: string;
  id: string;
  kind: "sleep" | "wait" | "invoke" | "retry";
  /** The sleep's end, the timeout, the retry's time; null without a timeout. */
  dueAt: Date | null;
  /** A wait's event name, condition and start. */
  eventName?: string | undefined;
  condition?: string | null | undefined;
  since?: Date | undefined;
  /** An invoke's child run. */
  invokedRunId?: string | undefined;
}

/** A journaled step as read back. */
export interface StepView {
  key: string;
  id: string;
  attempt: number;
  startedAt: Date | null;
  endedAt: Date | null;
  output: unknown;
  hasOutput: boolean;
  error: StoredError | null;
  journaledAt: Date;
  /** Who journaled it: null for a step the worker ran, else the kind of await the engine ended. */
  kind?: "sleep" | "wait" | "invoke" | null | undefined;
  /** For an invoke step, the run it started. */
  invokedRunId?: string | null | undefined;
}

/** Filter and page of ListRuns. */
export interface RunFilter {
  appId?: string | undefined;
  functionId?: string | undefined;
  status?: RunStatus | undefined;
  eventId?: string | undefined;
  /** Runs created at or after this. */
  createdAfter?: Date | undefined;
  /** Runs created before this. */
  createdBefore?: Date | undefined;
  limit: number;
  /** Keyset cursor: runs created before this (created_at, id). */
  before?: { createdAt: Date; id: string } | undefined;
}

/** Channel name of timer notifications when none is configured. */
export const DEFAULT_TIMER_CHANNEL = "stepwise_timers";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** True when s is a UUID in canonical text form. */
export function isUuid(s: string): boolean {
  return UUID.test(s);
}

