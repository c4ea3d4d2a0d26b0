import { create } from "@bufbuild/protobuf";
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import {
  ConnectRequestSchema,
  RunResultSchema,
  StepResultSchema,
  type ConnectRequest,
  type JournalEntry,
  type StartRun,
  type StepAck,
} from "@stepwise/proto";
import { deserializeError, NonRetriableError, serializeError, StepError, type SerializedError } from "./errors.js";
import type { ReceivedEvent, StepwiseFunction } from "./function.js";
import type { StepTools } from "./step-tools.js";
import { fromErrorDetail, toErrorDetail } from "./wire.js";

/** Largest JSON a step or a run may return. */
export const MAX_OUTPUT_BYTES = 4 * 1024 * 1024;

/**
 * JSON that Postgres's jsonb refuses: an escaped NUL (\u0000) or lone
 * surrogate (JSON.stringify escapes those; well-formed pairs stay raw), not
 * preceded by an escaping backslash.
 */
const UNSTORABLE_JSON = /(?:^|[^\\])(?:\\\\)*\\u(?:0000|d[89a-f][0-9a-f]{2})/i;

type Outcome = { outputJson: string } | { error: SerializedError };

/** Raised inside a handler whose run was taken away (cancelled, or the stream dropped). */
export class RunAbortedError extends Error {
  override name = "RunAbortedError";
}

/**
 * One execution of a run on a worker. Journaled steps return their recorded
 * outcome; new ones run, and their outcome is sent and awaited until the
 * executor acknowledges it is committed. The handler stays in memory across
 * steps: nothing is replayed while the run keeps its slot.
 */
export class RunExecution {
  private readonly journal = new Map<string, Outcome>();
  private readonly occurrences = new Map<string, number>();
  private readonly acks = new Map<string, { resolve: (a: StepAck) => void; reject: (e: Error) => void }>();
  private aborted: RunAbortedError | undefined;

  constructor(
    private readonly start: StartRun,
    private readonly fn: StepwiseFunction,
    private readonly send: (msg: ConnectRequest) => void,
  ) {
    for (const e of start.journal) this.journal.set(e.stepKey, fromJournalEntry(e));
  }

  get runId(): string {
    return this.start.runId;
  }

  /** The lease of this execution; messages for another lease are not for it. */
  get lease(): number {
    return this.start.lease;
  }

  /** Runs the handler to its end and reports the outcome, unless aborted first. */
  async execute(): Promise<void> {
    let outcome: Outcome;
    try {
      const ev = this.start.event;
      const event = this.fn.parseEvent({
        id: ev?.id ?? "",
        name: ev?.name ?? "",
        data: JSON.parse(ev?.dataJson || "{}") as Record<string, unknown>,
        ts: new Date(ev?.ts ? timestampMs(ev.ts) : 0),
      } satisfies ReceivedEvent);
      const value = await this.fn.handler({ event, step: this.tools(), runId: this.start.runId });
      outcome = encodeOutput(value, "the handler's return value");
    } catch (err) {
      outcome = { error: serializeError(err) };
    }
    if (this.aborted) return;
    this.send(
      create(ConnectRequestSchema, {
        message: {
          case: "runResult",
          value: create(RunResultSchema, {
            runId: this.start.runId,
            lease: this.start.lease,
            result:
              "error" in outcome
                ? { case: "error", value: toErrorDetail(outcome.error) }
                : { case: "outputJson", value: outcome.outputJson },
          }),
        },
      }),
    );
  }

  /** Delivers the executor's acknowledgement of a step. */
  onAck(ack: StepAck): void {
    const waiter = this.acks.get(ack.stepKey);
    if (!waiter) return;
    this.acks.delete(ack.stepKey);
    waiter.resolve(ack);
  }

  /** Takes the run away: steps awaiting an ack fail, and no result is sent. */
  abort(reason: string): void {
    if (this.aborted) return;
    this.aborted = new RunAbortedError(reason);
    for (const w of this.acks.values()) w.reject(this.aborted);
    this.acks.clear();
  }

  private tools(): StepTools {
    return {
      run: (id, fn) => this.runStep(id, fn) as never,
    };
  }

  private nextKey(id: string): string {
    const n = this.occurrences.get(id) ?? 0;
    this.occurrences.set(id, n + 1);
    return `${id}:${n}`;
  }

  private async runStep(id: string, fn: () => unknown): Promise<unknown> {
    if (typeof id !== "string" || id.length === 0) throw new NonRetriableError("step.run needs a non-empty id");
    const key = this.nextKey(id);
    const recorded = this.journal.get(key);
    if (recorded) return settle(id, recorded);
    if (this.aborted) throw this.aborted;

    const startedAt = Date.now();
    let outcome: Outcome;
    try {
      outcome = encodeOutput(await fn(), `the output of step ${JSON.stringify(id)}`);
    } catch (err) {
      outcome = { error: serializeError(err) };
    }
    if (this.aborted) throw this.aborted;
    const endedAt = Date.now();
    const acked = new Promise<StepAck>((resolve, reject) => this.acks.set(key, { resolve, reject }));
    this.send(
      create(ConnectRequestSchema, {
        message: {
          case: "stepResult",
          value: create(StepResultSchema, {
            runId: this.start.runId,
            lease: this.start.lease,
            stepKey: key,
            stepId: id,
            attempt: 1,
            startedAt: timestampFromMs(startedAt),
            endedAt: timestampFromMs(endedAt),
            result:
              "error" in outcome
                ? { case: "error", value: toErrorDetail(outcome.error) }
                : { case: "outputJson", value: outcome.outputJson },
          }),
        },
      }),
    );
    const ack = await acked;
    // An earlier execution journaled this step first: its result is the one
    // that counts, so every execution proceeds on the same value.
    const final = ack.journaled ? fromJournalEntry(ack.journaled) : outcome;
    this.journal.set(key, final);
    return settle(id, final);
  }
}

function settle(stepId: string, outcome: Outcome): unknown {
  if ("error" in outcome) throw new StepError(stepId, deserializeError(outcome.error));
  return JSON.parse(outcome.outputJson);
}

function encodeOutput(value: unknown, what: string): Outcome {
  let json: string | undefined;
  try {
    json = JSON.stringify(value);
  } catch (err) {
    throw new NonRetriableError(`${what} is not JSON: ${err instanceof Error ? err.message : String(err)}`);
  }
  json ??= "null";
  if (UNSTORABLE_JSON.test(json)) {
    throw new NonRetriableError(`${what} contains a NUL character or a lone surrogate, which cannot be journaled`);
  }
  if (json.length > MAX_OUTPUT_BYTES / 4 && Buffer.byteLength(json) > MAX_OUTPUT_BYTES) {
    throw new NonRetriableError(`${what} is ${Buffer.byteLength(json)} bytes of JSON, more than the ${MAX_OUTPUT_BYTES} allowed`);
  }
  return { outputJson: json };
}

function fromJournalEntry(e: JournalEntry): Outcome {
  if (e.result.case === "error") return { error: fromErrorDetail(e.result.value) };
  return { outputJson: e.result.case === "outputJson" ? e.result.value : "null" };
}
