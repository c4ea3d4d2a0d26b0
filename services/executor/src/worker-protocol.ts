import { create } from "@bufbuild/protobuf";
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import type { AttemptRecord, AwaitRecord, ClaimedRun, JournalEntry, StepRecord, StoredError } from "@stepwise/core";
import {
  CancelRunSchema,
  ConnectResponseSchema,
  DrainSchema,
  errorFromDetail,
  errorToDetail,
  HeartbeatSchema,
  JournalEntrySchema,
  MAX_OUTPUT_BYTES,
  MAX_SUSPEND_MS,
  RegisteredSchema,
  ResponseBatchSchema,
  RunEventSchema,
  StartRunSchema,
  StepAckSchema,
  type ConnectRequest,
  type ConnectResponse,
  type JournalEntry as ProtoJournalEntry,
  type Register,
  type RunEvent,
  type RunResult,
  type StepResult,
  type Suspend,
} from "@stepwise/proto";
import { type InvalidAwait, parseAwaits } from "./suspension.js";

// The worker protocol at the executor's edge: each message a worker sends
// is decoded here once into what the executor, the recorder and the
// suspender work with (journal records, awaits), and every message to a
// worker is encoded here. Nothing past this module sees protobuf.

/**
 * Reads the first message of a worker's stream, which must be its register,
 * within `timeoutMs`: DEADLINE_EXCEEDED past it, INVALID_ARGUMENT for any
 * other message or a stream that ends first.
 */
export async function readRegister(it: AsyncIterator<ConnectRequest>, timeoutMs: number): Promise<Register> {
  let timer: NodeJS.Timeout | undefined;
  const first = await Promise.race([
    it.next(),
    new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new ConnectError(`no register message within ${timeoutMs / 1000} s`, Code.DeadlineExceeded)),
        timeoutMs,
      );
    }),
  ]).finally(() => clearTimeout(timer));
  if (first.done || first.value.message.case !== "register") {
    throw new ConnectError("the first message on the stream must be register", Code.InvalidArgument);
  }
  return first.value.message.value;
}

/** A message from a worker, decoded. */
export type WorkerMessage =
  /** A step's result to journal (a value, or an error that ends the step). */
  | { kind: "step"; step: StepRecord }
  /** A failed attempt of a step, to journal; the worker suspends the run until its retry time. */
  | { kind: "attempt"; attempt: AttemptRecord }
  /** The handler returned or failed for good. */
  | { kind: "run-ended"; runId: string; lease: number; end: RunEnding }
  /** The handler failed outside any step and is retried at retryAtMs (within the longest suspension). */
  | { kind: "run-retry"; runId: string; lease: number; error: StoredError; retryAtMs: number }
  /** The run waits: what for, or why the suspension cannot be honoured. */
  | { kind: "suspend"; runId: string; lease: number; suspension: Suspension }
  | { kind: "heartbeat" }
  | { kind: "drain" }
  /** A register after the first message: a stream registers once. */
  | { kind: "register-again" }
  /** A message this version does not know (a newer protocol's), or a batch inside a batch: ignored, the stream stays up. */
  | { kind: "ignored" };

/** How a run's handler ended. */
export type RunEnding = { kind: "completed"; outputJson: string } | { kind: "failed"; error: StoredError };

/**
 * What a suspension waits for. `invalid` awaits fail their step; a
 * suspension with `refused` set cannot be honoured at all (no awaits,
 * keys missing or repeated, too many) and would come back identical on
 * every replay.
 */
export type Suspension = { awaits: AwaitRecord[]; invalid: InvalidAwait[] } | { refused: string };

/**
 * Decodes a worker's message, and the messages of a batch, in order, into
 * `out`. Batches do not nest: a batch inside one is ignored like an unknown
 * message.
 */
export function decodeWorkerMessages(req: ConnectRequest, out: WorkerMessage[] = [], inBatch = false): WorkerMessage[] {
  const m = req.message;
  switch (m.case) {
    case "batch":
      if (!inBatch) for (const inner of m.value.messages) decodeWorkerMessages(inner, out, true);
      else out.push({ kind: "ignored" });
      return out;
    case "stepResult":
      out.push(decodeStepResult(m.value));
      return out;
    case "runResult":
      out.push(decodeRunResult(m.value));
      return out;
    case "suspend":
      out.push(decodeSuspend(m.value));
      return out;
    case "heartbeat":
      out.push({ kind: "heartbeat" });
      return out;
    case "drain":
      out.push({ kind: "drain" });
      return out;
    case "register":
      out.push({ kind: "register-again" });
      return out;
    default:
      out.push({ kind: "ignored" });
      return out;
  }
}

function decodeStepResult(m: StepResult): WorkerMessage {
  const result = m.result;
  const step: StepRecord = {
    runId: m.runId,
    lease: m.lease,
    stepKey: m.stepKey,
    stepId: m.stepId,
    attempt: m.attempt,
    startedAtMs: m.startedAt ? timestampMs(m.startedAt) : Date.now(),
    endedAtMs: m.endedAt ? timestampMs(m.endedAt) : Date.now(),
  };
  if (result.case === "error") {
    const error = errorFromDetail(result.value);
    if (m.retryAt) return { kind: "attempt", attempt: { ...step, error, retryAtMs: timestampMs(m.retryAt) } };
    step.error = error;
  } else if (result.case === "outputJson") {
    const tooLarge = oversized(result.value, `step ${JSON.stringify(m.stepId.slice(0, 64))}: its result`);
    if (tooLarge) step.error = tooLarge;
    else step.outputJson = result.value;
  }
  return { kind: "step", step };
}

/**
 * The error of a result over MAX_OUTPUT_BYTES, which the SDKs refuse
 * before sending (docs/protocol.md): a worker that sends one anyway gets
 * the step (or the run) failed with it rather than a journal row of any size.
 */
function oversized(json: string, what: string): StoredError | undefined {
  if (json.length <= MAX_OUTPUT_BYTES / 4) return undefined;
  const bytes = Buffer.byteLength(json);
  if (bytes <= MAX_OUTPUT_BYTES) return undefined;
  return { name: "OutputTooLarge", message: `${what} is ${bytes} bytes of JSON, more than the ${MAX_OUTPUT_BYTES} allowed` };
}

function decodeRunResult(m: RunResult): WorkerMessage {
  const result = m.result;
  if (result.case === "error") {
    if (m.retryAt) {
      // Within the longest suspension, whatever the worker asked.
      const retryAtMs = Math.min(timestampMs(m.retryAt), Date.now() + MAX_SUSPEND_MS);
      return { kind: "run-retry", runId: m.runId, lease: m.lease, error: errorFromDetail(result.value), retryAtMs };
    }
    return { kind: "run-ended", runId: m.runId, lease: m.lease, end: { kind: "failed", error: errorFromDetail(result.value) } };
  }
  const outputJson = result.case === "outputJson" ? result.value : "null";
  const tooLarge = oversized(outputJson, "the run's output");
  if (tooLarge) return { kind: "run-ended", runId: m.runId, lease: m.lease, end: { kind: "failed", error: tooLarge } };
  return { kind: "run-ended", runId: m.runId, lease: m.lease, end: { kind: "completed", outputJson } };
}

function decodeSuspend(m: Suspend): WorkerMessage {
  let suspension: Suspension;
  try {
    suspension = parseAwaits(m, Date.now());
  } catch (err) {
    suspension = { refused: err instanceof Error ? err.message : String(err) };
  }
  return { kind: "suspend", runId: m.runId, lease: m.lease, suspension };
}

const response = (message: ConnectResponse["message"]): ConnectResponse => create(ConnectResponseSchema, { message });

/** The answer to a worker's register. */
export function registeredMessage(workerId: string, heartbeatIntervalMs: number, batches: boolean): ConnectResponse {
  return response({ case: "registered", value: create(RegisteredSchema, { workerId, heartbeatIntervalMs, batches }) });
}

/** The answer to a worker's heartbeat. */
export function heartbeatMessage(): ConnectResponse {
  return response({ case: "heartbeat", value: create(HeartbeatSchema, { sentAtMs: BigInt(Date.now()) }) });
}

/** Asks a worker to finish what it holds and take nothing new. */
export function drainMessage(reason: string): ConnectResponse {
  return response({ case: "drain", value: create(DrainSchema, { reason }) });
}

/**
 * Acknowledges a step result (or an attempt) once the journal holds it;
 * with `journaled` when the journal holds another result for the key, which
 * the worker must continue with instead of its own.
 */
export function stepAckMessage(runId: string, stepKey: string, lease: number, journaled?: JournalEntry): ConnectResponse {
  return response({
    case: "stepAck",
    value: create(StepAckSchema, { runId, stepKey, lease, ...(journaled ? { journaled: journalEntryMessage(journaled) } : {}) }),
  });
}

/** Tells a worker to drop an execution of a run. */
export function cancelRunMessage(runId: string, lease: number, reason: string): ConnectResponse {
  return response({ case: "cancelRun", value: create(CancelRunSchema, { runId, lease, reason }) });
}

/** Starts a claimed run on a worker, with its event and journal. */
export function startRunMessage(claimed: ClaimedRun, traceParent = ""): ConnectResponse {
  return response({
    case: "startRun",
    value: create(StartRunSchema, {
      runId: claimed.runId,
      functionId: claimed.functionId,
      lease: claimed.lease,
      event: runEventMessage(claimed.event),
      events: claimed.events?.map(runEventMessage) ?? [],
      traceParent,
      journal: claimed.journal.map(journalEntryMessage),
      attempt: claimed.attempt,
      stepAttempts: claimed.stepAttempts,
      retryAt: Object.fromEntries(Object.entries(claimed.retryAtMs).map(([key, ms]) => [key, timestampFromMs(ms)])),
    }),
  });
}

/** The messages of one turn as one stream message, for a worker that takes batches. */
export function batchMessage(messages: ConnectResponse[]): ConnectResponse {
  return messages.length === 1 ? messages[0]! : response({ case: "batch", value: create(ResponseBatchSchema, { messages }) });
}

/** An event of a run as the worker protocol carries it. */
function runEventMessage(e: ClaimedRun["event"]): RunEvent {
  return create(RunEventSchema, { id: e.id, name: e.name, dataJson: e.dataJson, ts: timestampFromMs(e.tsMs) });
}

/** A journal entry as the worker protocol carries it. */
function journalEntryMessage(e: JournalEntry): ProtoJournalEntry {
  return create(JournalEntrySchema, {
    stepKey: e.stepKey,
    result: e.error ? { case: "error", value: errorToDetail(e.error) } : { case: "outputJson", value: e.outputJson },
  });
}
