import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import {
  EventSchema,
  SendAnswerSchema,
  SendFailureSchema,
  SendResponseSchema,
  SendStreamResponseSchema,
  type Event,
  type IngestService,
  type SendRequest,
  type SendStreamRequest,
  type SendStreamResponse,
} from "@stepwise/proto";
import { pushable } from "it-pushable";
import { describe, expect, it } from "vitest";
import { EventSender } from "./event-sender.js";
import { StepwiseError } from "./stepwise-error.js";
import { STREAM_LINGER_MS } from "./wire.js";

/** An IngestService client whose SendStreams the test drives; Send answers with the events' ids. */
function fakeClient() {
  const streams: Array<{
    requests: SendStreamRequest[];
    answerAll: () => void;
    fail: (err: Error) => void;
    ended: Promise<void>;
  }> = [];
  const unary: SendRequest[] = [];
  const client = {
    sendStream(reqs: AsyncIterable<SendStreamRequest>): AsyncIterable<SendStreamResponse> {
      const out = pushable<SendStreamResponse>({ objectMode: true });
      const requests: SendStreamRequest[] = [];
      let answered = 0;
      const ended = (async () => {
        for await (const r of reqs) requests.push(r);
      })();
      streams.push({
        requests,
        ended,
        // Answers every call not yet answered: a call whose first event is named "bad" fails.
        answerAll: () => {
          const calls = requests.flatMap((r) => r.calls).slice(answered);
          answered += calls.length;
          out.push(
            create(SendStreamResponseSchema, {
              answers: calls.map((c) =>
                create(SendAnswerSchema, {
                  callId: c.callId,
                  outcome:
                    c.events[0]?.name === "bad"
                      ? { case: "failed", value: create(SendFailureSchema, { code: Code.InvalidArgument, message: "events[0].name: bad" }) }
                      : { case: "sent", value: create(SendResponseSchema, { ids: c.events.map((e) => e.id) }) },
                }),
              ),
            }),
          );
        },
        fail: (err) => out.end(err),
      });
      void ended.then(() => setTimeout(() => out.end(), 5));
      return out;
    },
    async send(req: SendRequest) {
      unary.push(req);
      return create(SendResponseSchema, { ids: req.events.map((e) => e.id) });
    },
  } as unknown as Client<typeof IngestService>;
  return { client, streams, unary };
}

const turn = () => new Promise((r) => setTimeout(r, 10));
const ev = (id: string, name = "e"): Event[] => [create(EventSchema, { id, name })];

describe("EventSender", () => {
  it("sends the calls of one turn in one message on one stream, shares it with later calls, and ends it a linger after", async () => {
    const { client, streams } = fakeClient();
    const sender = new EventSender(client);
    const first = [sender.send(ev("a")), sender.send(ev("b")), sender.send(ev("c", "bad"))];
    await turn();
    expect(streams).toHaveLength(1);
    expect(streams[0]!.requests.map((r) => r.calls.map((c) => c.events[0]!.id))).toEqual([["a", "b", "c"]]);
    streams[0]!.answerAll();
    const outcomes = await Promise.allSettled(first);
    expect(outcomes.slice(0, 2)).toEqual([
      { status: "fulfilled", value: ["a"] },
      { status: "fulfilled", value: ["b"] },
    ]);
    const failure = (outcomes[2] as PromiseRejectedResult).reason as StepwiseError;
    expect(failure).toBeInstanceOf(StepwiseError);
    expect(failure.code).toBe("invalid_argument");
    expect(failure.message).toBe("events[0].name: bad");

    const later = sender.send(ev("d"));
    await turn();
    expect(streams).toHaveLength(1);
    streams[0]!.answerAll();
    expect(await later).toEqual(["d"]);
    const idleSince = performance.now();
    await streams[0]!.ended;
    expect(performance.now() - idleSince).toBeGreaterThanOrEqual(STREAM_LINGER_MS - 20);
  });

  it("fails the calls a failed stream carried, without sending them again, and opens a new stream for the next", async () => {
    const { client, streams, unary } = fakeClient();
    const sender = new EventSender(client);
    const lost = sender.send(ev("a"));
    await turn();
    streams[0]!.fail(new ConnectError("ingest went away", Code.Unavailable));
    await expect(lost).rejects.toMatchObject({ name: "StepwiseError", code: "unavailable" });
    const next = sender.send(ev("b"));
    await turn();
    expect(streams).toHaveLength(2);
    expect(streams[1]!.requests[0]!.calls.map((c) => c.events[0]!.id)).toEqual(["b"]);
    streams[1]!.answerAll();
    expect(await next).toEqual(["b"]);
    expect(unary).toHaveLength(0);
    sender.close();
  });

  it("sends with Send, for good, on an ingest without SendStream", async () => {
    const { client, streams, unary } = fakeClient();
    const sender = new EventSender(client);
    const a = sender.send(ev("a"));
    await turn();
    streams[0]!.fail(new ConnectError("no such method", Code.Unimplemented));
    expect(await a).toEqual(["a"]);
    expect(await sender.send(ev("b"))).toEqual(["b"]);
    expect(unary.map((r) => r.events[0]!.id)).toEqual(["a", "b"]);
    expect(streams).toHaveLength(1);
  });

  it("a Send that fails, on an ingest without SendStream, rejects with a StepwiseError that keeps the ConnectError", async () => {
    const refusal = new ConnectError("too many events", Code.ResourceExhausted);
    const client = {
      sendStream(): AsyncIterable<SendStreamResponse> {
        const out = pushable<SendStreamResponse>({ objectMode: true });
        out.end(new ConnectError("no such method", Code.Unimplemented));
        return out;
      },
      send: () => Promise.reject(refusal),
    } as unknown as Client<typeof IngestService>;
    const sender = new EventSender(client);
    for (const call of [sender.send(ev("a")), sender.send(ev("b"))]) {
      const err = await call.then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(StepwiseError);
      expect(err).toMatchObject({ name: "StepwiseError", code: "resource_exhausted", message: "too many events" });
      expect((err as StepwiseError).cause).toBe(refusal);
    }
  });

  it("close() ends the request side at once; the calls on it are still answered", async () => {
    const { client, streams } = fakeClient();
    const sender = new EventSender(client);
    const a = sender.send(ev("a"));
    await turn();
    sender.close();
    streams[0]!.answerAll();
    await streams[0]!.ended;
    expect(await a).toEqual(["a"]);
  });
});
