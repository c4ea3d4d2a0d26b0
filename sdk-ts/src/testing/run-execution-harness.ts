import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import {
  JournalEntrySchema,
  StartRunSchema,
  StepAckSchema,
  type ConnectRequest,
  type ErrorDetail,
  type JournalEntry,
  type RunResult,
  type StepResult,
  type Suspend,
} from "@stepwise/proto";
import type { StepwiseFunction } from "../function.js";
import { RunExecution } from "../run-execution.js";

// For the SDK's tests: one RunExecution on a fake stream. Not exported by
// the package, and not shipped in it: package.json's "files" leaves out
// dist/testing/.

/** Id of the run every harness executes. */
export const HARNESS_RUN_ID = "run-1";
/** Time of the triggering event every harness gives its run. */
export const HARNESS_EVENT_TS = Date.UTC(2025, 0, 2, 3, 4, 5, 678);

/** What the StartRun of a harness carries, and how it answers. */
export interface HarnessOptions {
  lease: number;
  journal?: JournalEntry[];
  event?: { name: string; data: unknown };
  /** Every event of a debounced or batched run (StartRun.events); the run's event is ev-1. */
  events?: Array<{ id: string; name: string; data: unknown }>;
  /** Attempt number of the handler (StartRun.attempt). */
  attempt?: number;
  /** Failed attempts of steps being retried (StartRun.step_attempts). */
  stepAttempts?: Record<string, number>;
  /** When their next attempts are due (StartRun.retry_at), in ms. */
  retryAt?: Record<string, number>;
  /** Acknowledge every step result on a later turn of the event loop, as the executor would. */
  autoAck?: boolean;
}

/** One RunExecution with a fake stream that records what the worker sends. */
export class Harness {
  readonly sent: ConnectRequest[] = [];
  readonly execution: RunExecution;
  readonly done: Promise<void>;

  constructor(fn: StepwiseFunction, opts: HarnessOptions) {
    const start = create(StartRunSchema, {
      runId: HARNESS_RUN_ID,
      functionId: fn.config.id,
      lease: opts.lease,
      event: {
        id: "ev-1",
        name: opts.event?.name ?? "e",
        dataJson: JSON.stringify(opts.event?.data ?? {}),
        ts: timestampFromMs(HARNESS_EVENT_TS),
      },
      events: (opts.events ?? []).map((e) => ({ id: e.id, name: e.name, dataJson: JSON.stringify(e.data), ts: timestampFromMs(HARNESS_EVENT_TS) })),
      journal: opts.journal ?? [],
      ...(opts.attempt !== undefined ? { attempt: opts.attempt } : {}),
      stepAttempts: opts.stepAttempts ?? {},
      retryAt: Object.fromEntries(Object.entries(opts.retryAt ?? {}).map(([k, ms]) => [k, timestampFromMs(ms)])),
    });
    this.execution = new RunExecution(start, fn, (msg) => {
      this.sent.push(msg);
      if (opts.autoAck && msg.message.case === "stepResult") {
        const key = msg.message.value.stepKey;
        setImmediate(() => this.ack(key));
      }
    });
    this.done = this.execution.execute();
  }

  get stepResults(): StepResult[] {
    return this.sent.flatMap((m) => (m.message.case === "stepResult" ? [m.message.value] : []));
  }

  get stepKeys(): string[] {
    return this.stepResults.map((r) => r.stepKey);
  }

  get runResults(): RunResult[] {
    return this.sent.flatMap((m) => (m.message.case === "runResult" ? [m.message.value] : []));
  }

  get runResult(): RunResult | undefined {
    return this.runResults[0];
  }

  get suspends(): Suspend[] {
    return this.sent.flatMap((m) => (m.message.case === "suspend" ? [m.message.value] : []));
  }

  /** The kinds of message sent, in order. */
  get kinds(): string[] {
    return this.sent.map((m) => m.message.case ?? "");
  }

  /** The recorded step results as the journal a later StartRun would carry. */
  journal(): JournalEntry[] {
    return this.stepResults.map((r) => create(JournalEntrySchema, { stepKey: r.stepKey, result: r.result }));
  }

  ack(stepKey: string, journaled?: JournalEntry): void {
    this.execution.onAck(create(StepAckSchema, { runId: HARNESS_RUN_ID, stepKey, ...(journaled ? { journaled } : {}) }));
  }

  async until(cond: () => boolean, what: string): Promise<void> {
    for (let i = 0; i < 500; i++) {
      if (cond()) return;
      await tick();
    }
    throw new Error(`timed out waiting for ${what}; sent: ${this.kinds.join(", ")}`);
  }
}

/** A journal entry holding a step's output. */
export function journaledOutput(stepKey: string, value: unknown): JournalEntry {
  return create(JournalEntrySchema, { stepKey, result: { case: "outputJson", value: JSON.stringify(value) } });
}

/** A journal entry holding a step's final error. */
export function journaledError(stepKey: string, error: { name: string; message: string; nonRetriable?: boolean }): JournalEntry {
  return create(JournalEntrySchema, { stepKey, result: { case: "error", value: error } });
}

/** One turn of the event loop. */
export function tick(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** n turns of the event loop. */
export async function ticks(n = 50): Promise<void> {
  for (let i = 0; i < n; i++) await tick();
}

/** The decoded output of a step or run result; throws for an error. */
export function outputOf(r: { result: StepResult["result"] | RunResult["result"] } | undefined): unknown {
  if (r?.result.case !== "outputJson") throw new Error(`expected an output, got ${r?.result.case}`);
  return JSON.parse(r.result.value);
}

/** The error of a step or run result; throws for an output. */
export function errorOf(r: { result: StepResult["result"] | RunResult["result"] } | undefined): ErrorDetail {
  if (r?.result.case !== "error") throw new Error(`expected an error, got ${r?.result.case}`);
  return r.result.value;
}
