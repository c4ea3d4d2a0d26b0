import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import {
  EventRunsSchema,
  RunSchema,
  WatchRunsResponseSchema,
  type RunService,
  type WatchRunsRequest,
  type WatchRunsResponse,
} from "@stepwise/proto";
import { pushable } from "it-pushable";
import { describe, expect, it } from "vitest";
import { RunWatcher } from "./run-watcher.js";
import { STREAM_LINGER_MS } from "./wire.js";

/** A RunService client whose WatchRuns streams the test drives. */
function fakeClient() {
  const streams: Array<{
    requests: WatchRunsRequest[];
    answer: (eventIds: string[]) => void;
    fail: (err: Error) => void;
    ended: Promise<void>;
  }> = [];
  const client = {
    watchRuns(reqs: AsyncIterable<WatchRunsRequest>): AsyncIterable<WatchRunsResponse> {
      const out = pushable<WatchRunsResponse>({ objectMode: true });
      const requests: WatchRunsRequest[] = [];
      const ended = (async () => {
        for await (const r of reqs) requests.push(r);
      })();
      streams.push({
        requests,
        ended,
        answer: (ids) =>
          out.push(
            create(WatchRunsResponseSchema, {
              events: ids.map((id) => create(EventRunsSchema, { eventId: id, runs: [create(RunSchema, { id: `run-of-${id}` })] })),
            }),
          ),
        fail: (err) => out.end(err),
      });
      // The server ends its side once the client ended its own.
      void ended.then(() => setTimeout(() => out.end(), 5));
      return out;
    },
  } as unknown as Client<typeof RunService>;
  return { client, streams };
}

const turn = () => new Promise((r) => setTimeout(r, 10));

describe("RunWatcher", () => {
  it("sends the waits of one turn in one message on one stream, and ends the stream a linger after nothing is waited for", async () => {
    const { client, streams } = fakeClient();
    const watcher = new RunWatcher(client);
    const waits = ["a", "b", "c", "a"].map((id) => watcher.wait(id, 10_000));
    await turn();
    expect(streams).toHaveLength(1);
    expect(streams[0]!.requests.map((r) => r.eventIds)).toEqual([["a", "b", "c"]]);
    const d = watcher.wait("d", 10_000);
    await turn();
    expect(streams).toHaveLength(1);
    expect(streams[0]!.requests.map((r) => r.eventIds)).toEqual([["a", "b", "c"], ["d"]]);
    streams[0]!.answer(["a", "b", "c", "d"]);
    const outcomes = await Promise.all([...waits, d]);
    expect(outcomes.map((o) => (Array.isArray(o) ? o[0]?.id : o))).toEqual(["run-of-a", "run-of-b", "run-of-c", "run-of-a", "run-of-d"]);
    // A wait soon after shares the idle stream.
    await turn();
    const e = watcher.wait("e", 10_000);
    await turn();
    expect(streams).toHaveLength(1);
    expect(streams[0]!.requests.at(-1)?.eventIds).toEqual(["e"]);
    streams[0]!.answer(["e"]);
    await e;
    const idleSince = performance.now();
    await streams[0]!.ended;
    expect(performance.now() - idleSince).toBeGreaterThanOrEqual(STREAM_LINGER_MS - 20);
  });

  it("close() ends the request side at once, without the linger", async () => {
    const { client, streams } = fakeClient();
    const watcher = new RunWatcher(client);
    const a = watcher.wait("a", 10_000);
    await turn();
    watcher.close();
    let ended = false;
    void streams[0]!.ended.then(() => (ended = true));
    await turn();
    expect(ended).toBe(true);
    // This fake server ends its side then, with "a" unanswered: the wait goes on, on a new stream.
    for (let i = 0; i < 50 && streams.length < 2; i++) await turn();
    expect(streams[1]!.requests[0]?.eventIds).toEqual(["a"]);
    streams[1]!.answer(["a"]);
    expect(await a).toEqual([expect.objectContaining({ id: "run-of-a" })]);
    watcher.close();
    await streams[1]!.ended;
  });

  it("forgets an event at its timeout, and opens the stream again with every pending id after a failure", async () => {
    const { client, streams } = fakeClient();
    const watcher = new RunWatcher(client);
    const short = watcher.wait("short", 50);
    const long = watcher.wait("long", 10_000);
    expect(await short).toBe("timeout");
    await turn();
    expect(streams[0]!.requests.at(-1)?.forgetEventIds).toEqual(["short"]);
    streams[0]!.fail(new ConnectError("ingest went away", Code.Unavailable));
    for (let i = 0; i < 50 && streams.length < 2; i++) await turn();
    expect(streams).toHaveLength(2);
    expect(streams[1]!.requests[0]?.eventIds).toEqual(["long"]);
    streams[1]!.answer(["long"]);
    expect(await long).toEqual([expect.objectContaining({ id: "run-of-long" })]);
  });

  it("falls back to WaitForRuns, for good, on an ingest without WatchRuns", async () => {
    const { client, streams } = fakeClient();
    const watcher = new RunWatcher(client);
    const w = watcher.wait("x", 10_000);
    await turn();
    streams[0]!.fail(new ConnectError("no such method", Code.Unimplemented));
    expect(await w).toBe("unsupported");
    expect(await watcher.wait("y", 10_000)).toBe("unsupported");
    expect(streams).toHaveLength(1);
  });
});
