import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import {
  IngestService,
  SendCallSchema,
  SendStreamRequestSchema,
  TurnBatch,
  type Event,
  type SendCall,
  type SendStreamRequest,
} from "@stepwise/proto";
import { pushable, type Pushable } from "it-pushable";
import { callEngine, toStepwiseError, type StepwiseError } from "./stepwise-error.js";
import { activeTraceParent } from "./tracing.js";
import { requestStream, StreamLinger } from "./wire.js";

/** A call not yet answered, and the stream it went out on. */
interface PendingCall {
  events: readonly Event[];
  /** The sender's span when the call was made. */
  traceParent: string;
  stream: SendStream | undefined;
  resolve: (ids: string[]) => void;
  reject: (err: unknown) => void;
}

/** One SendStream: its request side. */
interface SendStream {
  outbox: Pushable<SendStreamRequest>;
}

/**
 * Sends events over one IngestService.SendStream instead of a Send call
 * each: a call on an open stream costs a message each way, where a unary
 * call costs a new HTTP/2 stream with its headers. The calls made in the
 * same turn of the event loop go out in one message. The stream opens on
 * the first call, stays open STREAM_LINGER_MS after the last answer, and
 * ends then. A failed stream fails the calls it carried, with its error
 * as a StepwiseError, as a failed Send would: they are not sent again, since an event without
 * an id of its own would be accepted twice. An ingest without SendStream
 * makes every call a Send, for good.
 */
export class EventSender {
  private nextCallId = 1n;
  private readonly pending = new Map<bigint, PendingCall>();
  private readonly queued = new TurnBatch<SendCall>((calls) => this.flush(calls));
  private stream: SendStream | undefined;
  private unsupported = false;
  private readonly linger = new StreamLinger(() => this.endStream());

  constructor(private readonly client: Client<typeof IngestService>) {}

  /** Sends events; resolves with their ids once the engine acknowledged every one, rejects with a StepwiseError. */
  send(events: Event[]): Promise<string[]> {
    if (this.unsupported) return this.sendUnary(events, activeTraceParent());
    return new Promise<string[]>((resolve, reject) => {
      const callId = this.nextCallId++;
      // The sender's span, if any: the events' runs join its trace.
      const traceParent = activeTraceParent();
      this.pending.set(callId, { events, traceParent, stream: undefined, resolve, reject });
      this.queued.add(create(SendCallSchema, { callId, events, traceParent }));
      this.linger.busy();
    });
  }

  /** Ends the stream once its calls are answered, without waiting for the linger. */
  close(): void {
    this.linger.busy();
    this.endStream();
  }

  private async sendUnary(events: Event[], traceParent: string): Promise<string[]> {
    const headers: Record<string, string> = traceParent ? { traceparent: traceParent } : {};
    return (await callEngine(() => this.client.send({ events }, { headers }))).ids;
  }

  /** Sends the calls of one turn, in one message. */
  private flush(calls: SendCall[]): void {
    if (this.unsupported) {
      for (const c of calls) this.settleWith(c.callId, this.sendUnary(c.events, c.traceParent));
      return;
    }
    let stream = this.stream;
    if (!stream) {
      stream = { outbox: pushable<SendStreamRequest>({ objectMode: true }) };
      this.stream = stream;
      void this.read(stream);
    }
    for (const c of calls) {
      const p = this.pending.get(c.callId);
      if (p) p.stream = stream;
    }
    stream.outbox.push(create(SendStreamRequestSchema, { calls }));
  }

  private endStream(): void {
    const s = this.stream;
    if (!s) return;
    this.stream = undefined;
    s.outbox.end();
  }

  private async read(stream: SendStream): Promise<void> {
    let failure: ConnectError | undefined;
    try {
      for await (const res of this.client.sendStream(requestStream(stream.outbox))) {
        for (const a of res.answers) {
          const p = this.pending.get(a.callId);
          if (!p) continue;
          this.pending.delete(a.callId);
          if (a.outcome.case === "sent") p.resolve(a.outcome.value.ids);
          else if (a.outcome.case === "failed") p.reject(toStepwiseError(new ConnectError(a.outcome.value.message, a.outcome.value.code)));
          else p.reject(toStepwiseError(new ConnectError("SendStream answered a call without an outcome", Code.Internal)));
        }
        if (this.pending.size === 0 && this.stream === stream) this.linger.idle();
      }
    } catch (err) {
      failure = ConnectError.from(err);
    }
    stream.outbox.end();
    if (this.stream === stream) {
      this.stream = undefined;
      this.linger.busy();
    }
    const unsupported = failure?.code === Code.Unimplemented;
    if (unsupported) this.unsupported = true;
    let rejection: StepwiseError | undefined;
    for (const [callId, p] of this.pending) {
      if (p.stream !== stream) continue;
      if (unsupported) {
        // The server does not know the method, so it accepted nothing: Send does it.
        this.settleWith(callId, this.sendUnary([...p.events], p.traceParent));
      } else {
        this.pending.delete(callId);
        rejection ??= toStepwiseError(failure ?? new ConnectError("SendStream ended before the call was answered", Code.Unavailable));
        p.reject(rejection);
      }
    }
  }

  private settleWith(callId: bigint, outcome: Promise<string[]>): void {
    const p = this.pending.get(callId);
    if (!p) return;
    this.pending.delete(callId);
    outcome.then(p.resolve, p.reject);
  }
}
