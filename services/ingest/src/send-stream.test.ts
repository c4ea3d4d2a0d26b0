import { create } from "@bufbuild/protobuf";
import { Code, createContextValues, type HandlerContext } from "@connectrpc/connect";
import { MemoryBus, type Bus } from "@stepwise/core";
import {
  EventSchema,
  SendCallSchema,
  SendStreamRequestSchema,
  type EventRecord,
  type SendAnswer,
  type SendStreamRequest,
} from "@stepwise/proto";
import { pushable } from "it-pushable";
import { afterEach, describe, expect, it } from "vitest";
import { MAX_CALLS_IN_PROGRESS, sendStream } from "./send-stream.js";

/** A bus whose publishEvents the test controls; it records what was published. */
function controlledBus(mode: { fail?: boolean; hold?: boolean } = {}) {
  const published: EventRecord[] = [];
  const held: (() => void)[] = [];
  const bus = {
    async publishEvents(records: readonly EventRecord[]) {
      if (mode.hold) await new Promise<void>((r) => held.push(r));
      if (mode.fail) throw new Error("nats down");
      published.push(...records);
    },
  } as unknown as Bus;
  return { bus, published, held };
}

function call(callId: number, events: { id?: string; name: string }[]) {
  return create(SendCallSchema, { callId: BigInt(callId), events: events.map((e) => create(EventSchema, e)) });
}

/** The client's side of a stream, counting the requests the handler has read. */
function countedRequests() {
  const requests = pushable<SendStreamRequest>({ objectMode: true });
  let pulled = 0;
  const counted = (async function* () {
    for await (const r of requests) {
      pulled++;
      yield r;
    }
  })();
  return { requests, counted, pulled: () => pulled };
}

/** A SendStream on the handler: the client's side, and the answers it got. */
function openStream(bus: Bus) {
  const { requests, counted, pulled } = countedRequests();
  const abort = new AbortController();
  const answers = new Map<bigint, SendAnswer>();
  let messages = 0;
  let onAnswer = () => {};
  const done = (async () => {
    for await (const res of sendStream(counted, { signal: abort.signal, values: createContextValues() } as HandlerContext, { bus })) {
      messages++;
      for (const a of res.answers) answers.set(a.callId, a);
      onAnswer();
    }
  })();
  return {
    send: (...calls: ReturnType<typeof call>[]) => requests.push(create(SendStreamRequestSchema, { calls })),
    end: () => requests.end(),
    abort: () => abort.abort(),
    answers,
    done,
    pulled,
    messages: () => messages,
    async until(n: number) {
      while (answers.size < n) await new Promise<void>((r) => (onAnswer = r));
    },
  };
}

const streams: ReturnType<typeof openStream>[] = [];
afterEach(() => {
  for (const s of streams.splice(0)) s.abort();
});

function stream(bus: Bus) {
  const s = openStream(bus);
  streams.push(s);
  return s;
}

describe("sendStream", () => {
  it("answers each call with the ids of its events, once they were published", async () => {
    const { bus, published } = controlledBus();
    const s = stream(bus);
    s.send(call(1, [{ id: "a-1", name: "a" }, { name: "b" }]), call(2, [{ id: "c-1", name: "c" }]));
    await s.until(2);
    const first = s.answers.get(1n)!;
    expect(first.outcome.case).toBe("sent");
    const ids = first.outcome.case === "sent" ? first.outcome.value.ids : [];
    expect(ids[0]).toBe("a-1");
    expect(ids[1]).toMatch(/^[0-9a-f-]{36}$/);
    expect(s.answers.get(2n)!.outcome).toMatchObject({ case: "sent", value: { ids: ["c-1"] } });
    expect(published.map((r) => r.id)).toEqual(["a-1", ids[1], "c-1"]);
    // Both answers were ready in the same turn: one message.
    expect(s.messages()).toBe(1);
  });

  it("fails an invalid call alone, with INVALID_ARGUMENT, and goes on with the others", async () => {
    const { bus, published } = controlledBus();
    const s = stream(bus);
    s.send(call(1, [{ name: "" }]), call(2, []), call(3, [{ id: "ok-1", name: "ok" }]));
    await s.until(3);
    expect(s.answers.get(1n)!.outcome).toMatchObject({
      case: "failed",
      value: { code: Code.InvalidArgument, message: "events[0].name: must not be empty" },
    });
    expect(s.answers.get(2n)!.outcome).toMatchObject({ case: "failed", value: { code: Code.InvalidArgument } });
    expect(s.answers.get(3n)!.outcome.case).toBe("sent");
    expect(published.map((r) => r.id)).toEqual(["ok-1"]);
    s.send(call(4, [{ id: "ok-2", name: "ok" }]));
    await s.until(4);
    expect(s.answers.get(4n)!.outcome.case).toBe("sent");
  });

  it("answers UNAVAILABLE when the event stream does not acknowledge", async () => {
    const { bus } = controlledBus({ fail: true });
    const s = stream(bus);
    s.send(call(7, [{ id: "x-1", name: "x" }]));
    await s.until(1);
    expect(s.answers.get(7n)!.outcome).toMatchObject({
      case: "failed",
      value: { code: Code.Unavailable, message: "the event stream is unavailable, retry the call" },
    });
  });

  it("ends once the client ended its side and every call was answered", async () => {
    const { bus, held } = controlledBus({ hold: true });
    const s = stream(bus);
    s.send(call(1, [{ id: "h-1", name: "h" }]));
    s.end();
    let ended = false;
    void s.done.then(() => (ended = true));
    await new Promise((r) => setTimeout(r, 20));
    expect(ended).toBe(false);
    held.splice(0).forEach((release) => release());
    await s.done;
    expect(s.answers.get(1n)!.outcome.case).toBe("sent");
  });

  it("reads no further request while MAX_CALLS_IN_PROGRESS calls are unanswered", async () => {
    const { bus, held } = controlledBus({ hold: true });
    const s = stream(bus);
    const full = Array.from({ length: MAX_CALLS_IN_PROGRESS }, (_, i) => call(i, [{ name: "h" }]));
    s.send(...full);
    s.send(call(100_000, [{ name: "h" }]));
    await new Promise((r) => setTimeout(r, 20));
    expect(s.pulled()).toBe(1);
    expect(held.length).toBe(MAX_CALLS_IN_PROGRESS);
    held.shift()!();
    await new Promise((r) => setTimeout(r, 20));
    expect(s.pulled()).toBe(2);
    expect(held.length).toBe(MAX_CALLS_IN_PROGRESS);
    held.splice(0).forEach((release) => release());
    await s.until(MAX_CALLS_IN_PROGRESS + 1);
  });

  it("reads no further request while MAX_CALLS_IN_PROGRESS answers wait for a client that does not read them", async () => {
    const { bus, published } = controlledBus();
    const { requests, counted, pulled } = countedRequests();
    const abort = new AbortController();
    const responses = sendStream(counted, { signal: abort.signal, values: createContextValues() } as HandlerContext, { bus })[Symbol.asyncIterator]();
    const full = (base: number) =>
      create(SendStreamRequestSchema, { calls: Array.from({ length: MAX_CALLS_IN_PROGRESS }, (_, i) => call(base + i, [{ name: "n" }])) });
    requests.push(full(0));
    requests.push(full(100_000));
    requests.push(full(200_000));
    const first = await responses.next();
    expect(first.done).toBe(false);
    expect(first.value?.answers).toHaveLength(MAX_CALLS_IN_PROGRESS);
    // The client reads nothing more: the second request's answers wait, and the third is not read.
    await new Promise((r) => setTimeout(r, 50));
    expect(pulled()).toBe(2);
    expect(published).toHaveLength(2 * MAX_CALLS_IN_PROGRESS);
    const second = await responses.next();
    expect(second.value?.answers).toHaveLength(MAX_CALLS_IN_PROGRESS);
    await new Promise((r) => setTimeout(r, 50));
    expect(pulled()).toBe(3);
    abort.abort();
    await responses.return?.(undefined);
  });

  it("publishes through a real bus implementation too", async () => {
    const bus = new MemoryBus();
    const s = stream(bus);
    s.send(call(1, [{ id: "m-1", name: "m" }]));
    await s.until(1);
    expect(s.answers.get(1n)!.outcome).toMatchObject({ case: "sent", value: { ids: ["m-1"] } });
    await bus.close();
  });
});
