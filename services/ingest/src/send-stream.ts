import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import { callerOf, endSpan, startSpanAfter, type Bus, type IngestMetrics, type Logger } from "@stepwise/core";
import {
  SendAnswerSchema,
  SendFailureSchema,
  SendResponseSchema,
  SendStreamResponseSchema,
  type Event,
  type SendAnswer,
  type SendStreamRequest,
  type SendStreamResponse,
} from "@stepwise/proto";
import { AnswerQueue } from "./answer-queue.js";
import { toEventRecords } from "./event-validation.js";

/**
 * Most calls one SendStream holds: in progress, or answered and not yet
 * sent. Past it the stream reads no further request until answers go out,
 * so a client that sends faster than the event stream acknowledges, or
 * that does not read its answers, is slowed by HTTP/2 flow control instead
 * of growing the server's memory.
 */
export const MAX_CALLS_IN_PROGRESS = 2_000;

/**
 * Accepts a batch of events as Send does: validates them, publishes them to
 * the event stream and resolves with their ids once it acknowledged every
 * one. Throws INVALID_ARGUMENT for an invalid event (nothing published) and
 * UNAVAILABLE when the event stream did not acknowledge. The call is a span
 * after the caller's (traceParent), which the events' runs continue.
 * `metrics` counts the events received, or refused and why. `appId` (the
 * app of the caller's event key) is the one app the events reach.
 */
export async function sendEvents(
  events: readonly Event[],
  bus: Bus,
  log: Logger | undefined,
  traceParent?: string,
  metrics?: IngestMetrics,
  appId?: string,
): Promise<string[]> {
  let records;
  try {
    records = toEventRecords({ events });
    if (appId) for (const r of records) r.appId = appId;
  } catch (err) {
    metrics?.eventsRejected(events.length, "invalid");
    throw err;
  }
  const { span, traceParent: tp } = startSpanAfter("stepwise.send", traceParent, { "stepwise.events": records.length }, "server");
  let error: string | undefined;
  try {
    if (tp !== "") for (const r of records) r.traceParent = tp;
    await bus.publishEvents(records);
  } catch (err) {
    log?.error({ err }, "publishing events failed");
    metrics?.eventsRejected(records.length, "unavailable");
    error = "the event stream is unavailable";
    throw new ConnectError("the event stream is unavailable, retry the call", Code.Unavailable);
  } finally {
    endSpan(span, error);
  }
  metrics?.eventsReceived(records.length);
  return records.map((r) => r.id);
}

/** The one app the caller's events reach: that of an event key limited to an app. */
export function eventApp(ctx: HandlerContext): string | undefined {
  const caller = callerOf(ctx);
  return caller?.scope === "event" && caller.app ? caller.app : undefined;
}

/**
 * One SendStream: every call is handled as soon as it arrives, concurrently
 * with the others, and answered once its events were acknowledged; the
 * answers ready in the same turn of the event loop go out in one message.
 * The stream ends once the client ended its side and every call was
 * answered.
 */
export async function* sendStream(
  requests: AsyncIterable<SendStreamRequest>,
  ctx: HandlerContext,
  deps: { bus: Bus; log?: Logger | undefined; metrics?: IngestMetrics | undefined },
): AsyncIterable<SendStreamResponse> {
  const calls = new CallsInProgress();
  const onAbort = () => calls.close();
  ctx.signal.addEventListener("abort", onAbort);
  const reader = (async () => {
    for await (const req of requests) {
      for (const call of req.calls) {
        calls.started();
        void sendEvents(call.events, deps.bus, deps.log, call.traceParent, deps.metrics, eventApp(ctx)).then(
          (ids) => calls.answer(create(SendAnswerSchema, { callId: call.callId, outcome: sent(ids) })),
          (err: unknown) => calls.answer(create(SendAnswerSchema, { callId: call.callId, outcome: failed(err) })),
        );
      }
      await calls.room();
    }
  })().then(
    () => calls.answers.endRequests(),
    (err: unknown) => calls.answers.fail(err),
  );
  try {
    for (;;) {
      // The answers ready in the same turn go out in one message.
      const answers = await calls.answers.next(true);
      if (answers === undefined) break;
      yield create(SendStreamResponseSchema, { answers });
    }
  } finally {
    ctx.signal.removeEventListener("abort", onAbort);
    calls.close();
    // Not awaited: a request stream ends when the peer's side does, which a
    // peer that vanished may never do.
    void reader;
  }
}

function sent(ids: string[]): SendAnswer["outcome"] {
  return { case: "sent", value: create(SendResponseSchema, { ids }) };
}

function failed(err: unknown): SendAnswer["outcome"] {
  const e = err instanceof ConnectError ? err : new ConnectError("the call failed", Code.Internal);
  return { case: "failed", value: create(SendFailureSchema, { code: e.code, message: e.rawMessage }) };
}

/** The calls of one stream not yet answered, and the answers not yet sent. */
class CallsInProgress {
  private inProgress = 0;
  private wakeReader: (() => void) | undefined;
  readonly answers = new AnswerQueue<SendAnswer>(
    () => this.inProgress > 0,
    () => this.makeRoom(),
  );

  started(): void {
    this.inProgress++;
  }

  answer(a: SendAnswer): void {
    this.inProgress--;
    this.answers.push(a);
    // The last answer owed after the client ended its side ends the stream.
    if (this.inProgress === 0) this.answers.wake();
  }

  /** Resolves once the stream holds fewer than MAX_CALLS_IN_PROGRESS calls. */
  async room(): Promise<void> {
    while (this.held() >= MAX_CALLS_IN_PROGRESS && !this.answers.closed) {
      await new Promise<void>((r) => (this.wakeReader = r));
    }
  }

  private held(): number {
    return this.inProgress + this.answers.size;
  }

  close(): void {
    this.answers.close();
    this.makeRoom();
  }

  private makeRoom(): void {
    const r = this.wakeReader;
    this.wakeReader = undefined;
    r?.();
  }
}
