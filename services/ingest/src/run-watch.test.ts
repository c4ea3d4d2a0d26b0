import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import { MemoryBus, type JournalStore, type RunView } from "@stepwise/core";
import {
  RunStatus as ProtoRunStatus,
  type RunStatusName,
  WatchRunsRequestSchema,
  type WatchRunsRequest,
  type WatchRunsResponse,
} from "@stepwise/proto";
import { pushable } from "it-pushable";
import { afterEach, describe, expect, it } from "vitest";
import { RunWaiters } from "./run-waiters.js";
import { MAX_WATCHED_EVENTS, watchRuns } from "./run-watch.js";

/** A journal whose runs the test sets, recording each read's event ids. */
function fakeStore() {
  const runs = new Map<string, RunStatusName[]>();
  const reads: string[][] = [];
  let failing = false;
  const store = {
    async runsOfEvents(ids: readonly string[]): Promise<RunView[]> {
      reads.push([...ids]);
      if (failing) throw new Error("journal down");
      return ids.flatMap((id) => (runs.get(id) ?? []).map((status, i) => view(id, i, status)));
    },
    async endedEvents(): Promise<string[]> {
      return [];
    },
  } as unknown as JournalStore;
  return { store, runs, reads, setFailing: (f: boolean) => (failing = f) };
}

function view(eventId: string, i: number, status: RunStatusName): RunView {
  return {
    id: `00000000-0000-4000-8000-${String(i).padStart(12, "0")}`,
    appId: "app",
    functionId: `f${i}`,
    status,
    lease: 1,
    createdAt: new Date(),
    startedAt: null,
    endedAt: null,
    output: { i },
    hasOutput: true,
    error: null,
    event: { id: eventId, name: "e", data: {}, ts: new Date() },
    originRunId: null,
    originStepKey: null,
    derivedRunIds: [],
    steps: [],
    failedAttempts: [],
  };
}

/** A WatchRuns stream on the handler: what the client sends, and what it got. */
function openStream(deps: { store: JournalStore; waiters: RunWaiters }) {
  const requests = pushable<WatchRunsRequest>({ objectMode: true });
  const abort = new AbortController();
  const received: WatchRunsResponse[] = [];
  let onReceive = () => {};
  const done = (async () => {
    for await (const res of watchRuns(requests, { signal: abort.signal } as HandlerContext, deps)) {
      received.push(res);
      onReceive();
    }
  })();
  const ids = () => received.flatMap((r) => r.events.map((e) => e.eventId));
  return {
    send: (eventIds: string[], forgetEventIds: string[] = []) =>
      requests.push(create(WatchRunsRequestSchema, { eventIds, forgetEventIds })),
    end: () => requests.end(),
    abort: () => abort.abort(),
    received,
    done,
    ids,
    /** Resolves once `n` events in all were answered. */
    async answered(n: number): Promise<void> {
      while (ids().length < n) await new Promise<void>((r) => (onReceive = r));
    },
  };
}

const tick = () => new Promise((r) => setTimeout(r, 30));

describe("watchRuns", () => {
  const buses: MemoryBus[] = [];
  afterEach(async () => {
    for (const b of buses.splice(0)) await b.close();
  });
  function setup() {
    const bus = new MemoryBus();
    buses.push(bus);
    const fake = fakeStore();
    const waiters = new RunWaiters(bus, fake.store);
    return { bus, ...fake, waiters };
  }

  it("answers events whose runs already ended at once, in one read for one request", async () => {
    const { store, runs, reads, waiters } = setup();
    for (let i = 0; i < 20; i++) runs.set(`ev-${i}`, ["COMPLETED", "FAILED"]);
    const s = openStream({ store, waiters });
    s.send(Array.from({ length: 20 }, (_, i) => `ev-${i}`));
    await s.answered(20);
    expect(reads).toHaveLength(1);
    expect(reads[0]).toHaveLength(20);
    const ev = s.received.flatMap((r) => r.events).find((e) => e.eventId === "ev-3");
    expect(ev?.runs.map((r) => r.status)).toEqual([ProtoRunStatus.COMPLETED, ProtoRunStatus.FAILED]);
    s.end();
    await s.done;
    await waiters.stop();
  });

  it("answers an event when the announcement of its last run comes, once, and not before", async () => {
    const { bus, store, runs, waiters } = setup();
    runs.set("ev-a", ["COMPLETED", "RUNNING"]);
    runs.set("ev-b", ["RUNNING"]);
    const s = openStream({ store, waiters });
    s.send(["ev-a", "ev-b", "ev-none"]);
    await tick();
    expect(s.ids()).toEqual([]);
    runs.set("ev-a", ["COMPLETED", "COMPLETED"]);
    bus.announceRunsEnded([{ runId: "r", eventId: "ev-a" }]);
    await s.answered(1);
    // A second announcement of the same event sends nothing more.
    bus.announceRunsEnded([{ runId: "r", eventId: "ev-a" }]);
    await tick();
    expect(s.ids()).toEqual(["ev-a"]);
    runs.set("ev-b", ["CANCELLED"]);
    bus.announceRunsEnded([{ runId: "r", eventId: "ev-b" }]);
    await s.answered(2);
    expect(s.ids()).toEqual(["ev-a", "ev-b"]);
    s.abort();
    await s.done;
    await waiters.stop();
  });

  it("answers from announcements that carry the completed runs, without a read, once all of the event's runs were announced", async () => {
    const { bus, store, runs, reads, waiters } = setup();
    runs.set("ev-a", ["RUNNING", "RUNNING"]);
    const s = openStream({ store, waiters });
    s.send(["ev-a"]);
    await tick();
    const before = reads.length;
    const completed = (runId: string, createdAtMs: number, output: unknown) => ({
      runId,
      eventId: "ev-a",
      completed: {
        appId: "app",
        functionId: `fn-${runId}`,
        eventName: "order.placed",
        eventDataJson: '{"orderId": "o-1"}',
        eventTsMs: 1_700_000_000_000,
        createdAtMs,
        startedAtMs: createdAtMs + 5,
        endedAtMs: createdAtMs + 9,
        outputJson: JSON.stringify(output),
        attempts: 1,
        eventRuns: 2,
      },
    });
    bus.announceRunsEnded([completed("00000000-0000-4000-8000-000000000002", 1_700_000_000_200, { n: 2 })]);
    await tick();
    expect(s.ids()).toEqual([]);
    bus.announceRunsEnded([completed("00000000-0000-4000-8000-000000000001", 1_700_000_000_100, null)]);
    await s.answered(1);
    expect(reads.length).toBe(before);
    const [ev] = s.received.flatMap((r) => r.events);
    // In the journal's order (by creation), with what the announcements carried.
    expect(ev!.runs.map((r) => [r.id, r.functionId, r.status, r.attempts])).toEqual([
      ["00000000-0000-4000-8000-000000000001", "fn-00000000-0000-4000-8000-000000000001", ProtoRunStatus.COMPLETED, 1],
      ["00000000-0000-4000-8000-000000000002", "fn-00000000-0000-4000-8000-000000000002", ProtoRunStatus.COMPLETED, 1],
    ]);
    const second = ev!.runs[1]!;
    expect(second.output?.kind.case).toBe("structValue");
    expect(second.output?.kind.value).toMatchObject({ fields: { n: { kind: { case: "numberValue", value: 2 } } } });
    expect(second.event?.name).toBe("order.placed");
    expect(second.event?.data).toEqual({ orderId: "o-1" });
    expect(Number(second.endedAt!.seconds) * 1000 + second.endedAt!.nanos / 1e6).toBe(1_700_000_000_209);
    expect(ev!.runs[0]!.output?.kind.case).toBe("nullValue");
    s.abort();
    await s.done;
    await waiters.stop();
  });

  it("completes an answer from a read's ended runs and a later announcement, without another read", async () => {
    const { bus, store, runs, reads, waiters } = setup();
    runs.set("ev-a", ["COMPLETED", "RUNNING"]);
    const s = openStream({ store, waiters });
    s.send(["ev-a"]);
    await tick();
    const before = reads.length;
    bus.announceRunsEnded([
      {
        runId: "00000000-0000-4000-8000-000000000001",
        eventId: "ev-a",
        completed: {
          appId: "app",
          functionId: "f1",
          eventName: "e",
          eventDataJson: "{}",
          eventTsMs: Date.now(),
          createdAtMs: Date.now(),
          startedAtMs: Date.now(),
          endedAtMs: Date.now(),
          outputJson: '"done"',
          attempts: 2,
          eventRuns: 2,
        },
      },
    ]);
    await s.answered(1);
    expect(reads.length).toBe(before);
    const [ev] = s.received.flatMap((r) => r.events);
    expect(ev!.runs.map((r) => [r.functionId, r.status])).toEqual([
      ["f0", ProtoRunStatus.COMPLETED],
      ["f1", ProtoRunStatus.COMPLETED],
    ]);
    s.abort();
    await s.done;
    await waiters.stop();
  });

  it("stops checking forgotten events, and ends once the client ended and nothing is left", async () => {
    const { bus, store, runs, reads, waiters } = setup();
    runs.set("ev-a", ["RUNNING"]);
    runs.set("ev-b", ["RUNNING"]);
    const s = openStream({ store, waiters });
    s.send(["ev-a", "ev-b"]);
    await tick();
    s.send([], ["ev-a"]);
    s.end();
    await tick();
    runs.set("ev-a", ["COMPLETED"]);
    bus.announceRunsEnded([{ runId: "r", eventId: "ev-a" }]);
    await tick();
    expect(reads.flat().filter((id) => id === "ev-a")).toHaveLength(1);
    let ended = false;
    void s.done.then(() => (ended = true));
    await tick();
    expect(ended).toBe(false); // ev-b is still watched
    runs.set("ev-b", ["COMPLETED"]);
    bus.announceRunsEnded([{ runId: "r", eventId: "ev-b" }]);
    await s.done;
    expect(s.ids()).toEqual(["ev-b"]);
    await waiters.stop();
  });

  it("reads again after the journal failed, and batches the announcements of one turn into one read", async () => {
    const { bus, store, runs, reads, waiters, setFailing } = setup();
    for (let i = 0; i < 10; i++) runs.set(`ev-${i}`, ["RUNNING"]);
    const s = openStream({ store, waiters });
    s.send(Array.from({ length: 10 }, (_, i) => `ev-${i}`));
    await tick();
    const before = reads.length;
    for (let i = 0; i < 10; i++) runs.set(`ev-${i}`, ["COMPLETED"]);
    bus.announceRunsEnded(Array.from({ length: 10 }, (_, i) => ({ runId: "r", eventId: `ev-${i}` })));
    await s.answered(10);
    expect(reads.length).toBe(before + 1);

    runs.set("ev-x", ["RUNNING"]);
    s.send(["ev-x"]);
    await tick();
    setFailing(true);
    runs.set("ev-x", ["COMPLETED"]);
    bus.announceRunsEnded([{ runId: "r", eventId: "ev-x" }]);
    await tick();
    setFailing(false);
    await s.answered(11);
    s.abort();
    await s.done;
    await waiters.stop();
  });

  it("fails the stream with INVALID_ARGUMENT for a malformed id, and RESOURCE_EXHAUSTED past the limit", async () => {
    const { store, waiters } = setup();
    for (const bad of [[""], ["x".repeat(257)]]) {
      const s = openStream({ store, waiters });
      s.send(bad);
      const err = await s.done.then(
        () => undefined,
        (e: unknown) => ConnectError.from(e),
      );
      expect(err?.code).toBe(Code.InvalidArgument);
    }
    const s = openStream({ store, waiters });
    s.send(Array.from({ length: MAX_WATCHED_EVENTS }, (_, i) => `ev-${i}`));
    s.send(["one-too-many"]);
    const err = await s.done.then(
      () => undefined,
      (e: unknown) => ConnectError.from(e),
    );
    expect(err?.code).toBe(Code.ResourceExhausted);
    await waiters.stop();
  });
});
