import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { create } from "@bufbuild/protobuf";
import { RunService, RunStatus, WatchRunsRequestSchema, type WatchRunsRequest } from "@stepwise/proto";
import { pushable } from "it-pushable";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Stepwise, Worker } from "@stepwise/sdk";
import { Stack } from "./support/stack.js";

// RunService.WaitForRuns on the real stack: it answers when the executor
// announces the end of an event's runs, not at its once-a-second recheck.
describe("WaitForRuns on the real stack", () => {
  const stack = new Stack();
  let client: Stepwise;
  let worker: Worker;

  beforeAll(async () => {
    await stack.start();
    client = new Stepwise({ appId: "waiting", url: stack.ingestUrl });
    const slow = client.createFunction({ id: "slow", triggers: [{ event: "slow" }] }, async ({ event, step }) =>
      step.run("work", async () => {
        await new Promise((r) => setTimeout(r, Number(event.data["ms"])));
        return { ok: true };
      }),
    );
    const second = client.createFunction({ id: "second", triggers: [{ event: "slow" }] }, async ({ step }) =>
      step.run("quick", () => 2),
    );
    const napper = client.createFunction({ id: "napper", triggers: [{ event: "nap" }] }, async ({ step }) => {
      await step.sleep("nap", "1h");
    });
    worker = new Worker({ url: stack.executorUrl, functions: [slow, second, napper], handleSignals: false });
    await worker.connect();
  });

  afterAll(async () => {
    await worker?.close();
    await stack.stop();
  });

  it("answers once every run of the event ended, pushed by the executor rather than found by the recheck", async () => {
    for (let i = 0; i < 3; i++) {
      const [id] = await client.send({ name: "slow", data: { ms: 300 } });
      const t0 = Date.now();
      const { runs, done } = await client.waitForRuns(id!, { timeoutMs: 10_000 });
      const elapsed = Date.now() - t0;
      expect(done).toBe(true);
      expect(runs.map((r) => [r.functionId, r.status]).sort()).toEqual([
        ["second", "COMPLETED"],
        ["slow", "COMPLETED"],
      ]);
      expect(runs.find((r) => r.functionId === "slow")?.output).toEqual({ ok: true });
      // The recheck comes a second after the last read; an answer this soon
      // after a 300 ms step can only come from the announcement.
      expect(elapsed).toBeGreaterThanOrEqual(300);
      expect(elapsed).toBeLessThan(900);
    }
  });

  it("answers with the runs as the journal holds them, whether from the executor's announcement or from a read", async () => {
    const [id] = await client.send({ name: "slow", data: { ms: 20, zeta: "z", alpha: [1, { b: 2, a: 1 }] } });
    // The first answer comes from the announcements (both runs completed, carried whole).
    const pushed = await client.waitForRuns(id!, { timeoutMs: 10_000 });
    expect(pushed.done).toBe(true);
    const read = await client.listRunsOfEvent(id!);
    const strip = (r: (typeof read)[number]) => ({ ...r, steps: [], failedAttempts: [] });
    expect(pushed.runs.map(strip)).toEqual([...read].reverse().map(strip));
    // A wait that starts after the end reads the journal: the same answer.
    const again = await client.waitForRuns(id!, { timeoutMs: 10_000 });
    expect(again.runs.map(strip)).toEqual(pushed.runs.map(strip));
  });

  it("answers at once for runs that already ended, and at the timeout with done false for a run still waiting", async () => {
    const [id] = await client.send({ name: "slow", data: { ms: 1 } });
    expect((await client.waitForRuns(id!)).done).toBe(true);
    const t0 = Date.now();
    expect((await client.waitForRuns(id!)).done).toBe(true);
    expect(Date.now() - t0).toBeLessThan(200);

    const [nap] = await client.send({ name: "nap", data: {} });
    const t1 = Date.now();
    const waiting = await client.waitForRuns(nap!, { timeoutMs: 1_500 });
    expect(Date.now() - t1).toBeGreaterThanOrEqual(1_400);
    expect(waiting.done).toBe(false);
    expect(waiting.runs.map((r) => r.status)).toEqual(["WAITING"]);
  });

  it("refuses a missing event id or a timeout over 300 s with INVALID_ARGUMENT", async () => {
    const runs = createClient(RunService, createGrpcTransport({ baseUrl: stack.ingestUrl }));
    for (const req of [{ eventId: "" }, { eventId: "e", timeoutMs: 300_001 }]) {
      const err = await runs.waitForRuns(req).then(
        () => undefined,
        (e: unknown) => ConnectError.from(e),
      );
      expect(err?.code).toBe(Code.InvalidArgument);
    }
  });

  it("WatchRuns answers many events on one stream, each once, and ends after the client's side once all are answered", async () => {
    const ids = await client.send(Array.from({ length: 30 }, (_, i) => ({ name: "slow", data: { ms: 5 * (i % 7) } })));
    const requests = pushable<WatchRunsRequest>({ objectMode: true });
    const runs = createClient(RunService, createGrpcTransport({ baseUrl: stack.ingestUrl }));
    async function* stream() {
      yield* requests;
    }
    requests.push(create(WatchRunsRequestSchema, { eventIds: ids.slice(0, 20) }));
    requests.push(create(WatchRunsRequestSchema, { eventIds: [...ids.slice(20), ids[0]!] }));
    requests.end();
    const answered = new Map<string, number>();
    for await (const res of runs.watchRuns(stream())) {
      for (const ev of res.events) {
        answered.set(ev.eventId, (answered.get(ev.eventId) ?? 0) + 1);
        expect(ev.runs.map((r) => r.functionId).sort()).toEqual(["second", "slow"]);
        expect(ev.runs.every((r) => r.status === RunStatus.COMPLETED)).toBe(true);
      }
    }
    expect([...answered.keys()].sort()).toEqual([...ids].sort());
    expect([...answered.values()].every((n) => n === 1)).toBe(true);
  });

  it("WatchRuns fails with INVALID_ARGUMENT on a malformed id", async () => {
    const runs = createClient(RunService, createGrpcTransport({ baseUrl: stack.ingestUrl }));
    async function* stream() {
      yield create(WatchRunsRequestSchema, { eventIds: ["ok", ""] });
    }
    const err = await (async () => {
      for await (const _ of runs.watchRuns(stream())) void _;
    })().then(
      () => undefined,
      (e: unknown) => ConnectError.from(e),
    );
    expect(err?.code).toBe(Code.InvalidArgument);
  });

  it("200 waits at once all end, and a wait survives a restart of ingest", async () => {
    const many = await client.send(Array.from({ length: 200 }, () => ({ name: "slow", data: { ms: 1 } })));
    const all = await Promise.all(many.map((id) => client.waitForRuns(id, { timeoutMs: 20_000 })));
    expect(all.every((r) => r.done && r.runs.length === 2)).toBe(true);

    const [late] = await client.send({ name: "slow", data: { ms: 3_000 } });
    const waiting = client.waitForRuns(late!, { timeoutMs: 30_000 });
    await new Promise((r) => setTimeout(r, 500));
    await stack.kill("ingest");
    await stack.startService("ingest");
    const { runs, done } = await waiting;
    expect(done).toBe(true);
    expect(runs.find((r) => r.functionId === "slow")?.output).toEqual({ ok: true });
  });
});
