import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type HandlerContext, type ReceivedEvent, Stepwise, Worker } from "@stepwise/sdk";
import { eventually, type ExtraService, Stack } from "./support/stack.js";

// Debounce and batchEvents on the real stack: ingest, two schedulers and
// two executors as separate processes, real NATS JetStream and Postgres,
// workers in this process. The handlers record the events each run got;
// a run executed again after a crash records the same run id again.
describe("debounce and batchEvents", () => {
  const stack = new Stack();
  let client: Stepwise;
  const workers: Worker[] = [];
  let secondScheduler: ExtraService;
  let secondExecutor: ExtraService;

  /** One execution of a handler: its run, its event, the ids of its events, when it started. */
  type Execution = { fn: string; runId: string; event: string; events: string[]; key: string; at: number };
  const executions: Execution[] = [];
  /** Runs of the crash test whose step the second executor's worker is executing, and since when. */
  const inFlightOnSecond = new Map<string, number>();
  const of = (fn: string) => executions.filter((e) => e.fn === fn);
  /** The executions of `fn`, one per run (a run executed twice recorded the same events both times). */
  function runsOf(fn: string): Execution[] {
    const byRun = new Map<string, Execution>();
    for (const e of of(fn)) {
      const had = byRun.get(e.runId);
      if (had) expect(e.events).toEqual(had.events);
      else byRun.set(e.runId, e);
    }
    return [...byRun.values()];
  }
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

  beforeAll(async () => {
    await stack.start();
    secondScheduler = await stack.startExtra("scheduler");
    secondExecutor = await stack.startExtra("executor");
    client = new Stepwise({ appId: "windows", url: stack.ingestUrl });
    // Each worker has its own copy of the functions, to know which one ran a body.
    const functionsOf = (worker: number) => {
      const record =
        (fn: string) =>
        async ({ event, events, runId, step }: HandlerContext<ReceivedEvent>) => {
          executions.push({ fn, runId, event: event.id, events: events.map((e) => e.id), key: String(event.data["key"] ?? ""), at: Date.now() });
          await step.run("work", async () => {
            if (worker === 1 && fn.startsWith("crash-")) inFlightOnSecond.set(runId, Date.now());
            // Long enough for a crash to find runs in flight.
            await sleep(fn.startsWith("crash-") ? 300 : 20);
            inFlightOnSecond.delete(runId);
          });
          return events.length;
        };
      return [
        client.createFunction({ id: "settle", triggers: [{ event: "doc.edited" }], debounce: { period: "500ms" } }, record("settle")),
        client.createFunction(
          { id: "settle-capped", triggers: [{ event: "doc.typed" }], debounce: { period: "500ms", timeout: "1500ms" } },
          record("settle-capped"),
        ),
        client.createFunction({ id: "tens", triggers: [{ event: "row.added" }], batchEvents: { maxSize: 10, timeout: "2s" } }, record("tens")),
        client.createFunction(
          { id: "per-user", triggers: [{ event: "click" }], debounce: { period: "300ms", key: "event.data.key" } },
          record("per-user"),
        ),
        client.createFunction(
          { id: "crash-batch", triggers: [{ event: "crash.row" }], batchEvents: { maxSize: 10, timeout: "1s", key: "event.data.key" } },
          record("crash-batch"),
        ),
        client.createFunction(
          { id: "crash-debounce", triggers: [{ event: "crash.edit" }], debounce: { period: "400ms", timeout: "2s", key: "event.data.key" } },
          record("crash-debounce"),
        ),
      ];
    };
    for (const [i, url] of [stack.executorUrl, `http://127.0.0.1:${secondExecutor.port}`].entries()) {
      const w = new Worker({ url, functions: functionsOf(i), handleSignals: false, capacity: 50 });
      await w.connect();
      workers.push(w);
    }
  }, 60_000);

  afterAll(async () => {
    for (const w of workers) await w.close();
    client?.close();
    await stack.stop();
  });

  it("debounce: 10 events 100 ms apart with a period of 500 ms make one run, with the last event and all 10 in `events`", async () => {
    const ids: string[] = [];
    let lastSentAt = 0;
    for (let i = 0; i < 10; i++) {
      ids.push(...(await client.send({ name: "doc.edited", data: { i } })));
      lastSentAt = Date.now();
      await sleep(100);
    }
    await eventually(async () => (of("settle").length > 0 ? true : undefined), 10_000, "the debounced run");
    // Longer than the period again: no second run comes.
    await sleep(1_000);
    const runs = runsOf("settle");
    expect(runs).toHaveLength(1);
    expect(runs[0]!.event).toBe(ids[9]);
    expect(runs[0]!.events).toEqual(ids);
    // Not before the period passed after the last event (the clocks are this machine's; 20 ms for rounding).
    expect(runs[0]!.at).toBeGreaterThanOrEqual(lastSentAt + 480);
    expect((await client.getRun(runs[0]!.runId)).status).toBe("COMPLETED");
  });

  it("debounce with a timeout: a steady stream still makes a run by the timeout, and every event is in one run", async () => {
    const ids: string[] = [];
    const firstAt = Date.now();
    // An event every 100 ms for 4 s: never 500 ms quiet.
    while (Date.now() - firstAt < 4_000) {
      ids.push(...(await client.send({ name: "doc.typed", data: {} })));
      await sleep(100);
    }
    const streamEnd = Date.now();
    await eventually(async () => (runsOf("settle-capped").flatMap((r) => r.events).length === ids.length ? true : undefined), 10_000, "every event in a run");
    const runs = runsOf("settle-capped").sort((a, b) => a.at - b.at);
    // The first run started during the stream, about 1.5 s after its first event (+ 700 ms for the hops on a busy machine).
    expect(runs[0]!.at).toBeLessThan(streamEnd);
    expect(runs[0]!.at - firstAt).toBeGreaterThanOrEqual(1_450);
    expect(runs[0]!.at - firstAt).toBeLessThan(2_200);
    expect(runs.length).toBeGreaterThanOrEqual(3);
    expect(runs.flatMap((r) => r.events).sort()).toEqual([...ids].sort());
    for (const r of runs) expect(r.event).toBe(r.events[r.events.length - 1]);
  });

  it("batchEvents: 95 events with maxSize 10 make 10 runs covering every event once", async () => {
    const ids = await client.send(Array.from({ length: 95 }, (_, i) => ({ name: "row.added", data: { i } })));
    await eventually(async () => (runsOf("tens").flatMap((r) => r.events).length >= 95 ? true : undefined), 15_000, "every event in a batch");
    await sleep(500);
    const runs = runsOf("tens");
    expect(runs).toHaveLength(10);
    expect(runs.map((r) => r.events.length).sort((a, b) => a - b)).toEqual([5, 10, 10, 10, 10, 10, 10, 10, 10, 10]);
    expect(runs.flatMap((r) => r.events).sort()).toEqual([...ids].sort());
    for (const r of runs) expect(r.event).toBe(r.events[0]);
    for (const r of runs) expect((await client.getRun(r.runId)).status).toBe("COMPLETED");
  });

  it("debounce by key: the events of each key make their own run", async () => {
    const sent: Record<string, string[]> = { a: [], b: [] };
    for (let i = 0; i < 6; i++) {
      const key = i % 2 === 0 ? "a" : "b";
      sent[key]!.push(...(await client.send({ name: "click", data: { key } })));
    }
    await eventually(async () => (runsOf("per-user").length === 2 ? true : undefined), 10_000, "a run per key");
    await sleep(600);
    const runs = runsOf("per-user");
    expect(runs).toHaveLength(2);
    expect(Object.fromEntries(runs.map((r) => [r.key, r.events]))).toEqual(sent);
  });

  it("a SIGKILL of a scheduler and of an executor in the middle: every event in exactly one run, no batch over its size, no run lost", async () => {
    const batchIds: Array<{ id: string; key: string }> = [];
    const killedWith: string[] = [];
    const debounceIds: Array<{ id: string; key: string }> = [];
    for (let i = 0; i < 120; i++) {
      const key = `k${i % 3}`;
      const [b] = await client.send({ name: "crash.row", data: { key, i } });
      batchIds.push({ id: b!, key });
      if (i % 3 === 0) {
        const [d] = await client.send({ name: "crash.edit", data: { key: `u${i % 2}`, i } });
        debounceIds.push({ id: d!, key: `u${i % 2}` });
      }
      if (i === 40) await secondScheduler.kill("SIGKILL");
      if (i === 80) {
        // While the second executor's worker is in the middle of a step (well before its end), whose result it then cannot journal.
        const midStep = () => [...inFlightOnSecond].filter(([, since]) => Date.now() - since < 150).map(([runId]) => runId);
        await eventually(async () => (midStep().length > 0 ? true : undefined), 10_000, "a run in flight on the second executor");
        killedWith.push(...midStep());
        await secondExecutor.kill("SIGKILL");
      }
      await sleep(10);
    }
    // Events the killed scheduler held come back after the event consumer's ack wait (30 s); runs the
    // killed executor held, after their lease.
    const covered = (fn: string, n: number) => async () => (runsOf(fn).flatMap((r) => r.events).length >= n ? true : undefined);
    await eventually(covered("crash-batch", batchIds.length), 90_000, "every batched event in a run");
    await eventually(covered("crash-debounce", debounceIds.length), 30_000, "every debounced event in a run");
    await sleep(1_500);
    const keyOf = new Map([...batchIds, ...debounceIds].map((e) => [e.id, e.key]));
    for (const [fn, sent] of [
      ["crash-batch", batchIds],
      ["crash-debounce", debounceIds],
    ] as const) {
      const runs = runsOf(fn);
      expect(runs.flatMap((r) => r.events).sort()).toEqual(sent.map((e) => e.id).sort());
      for (const r of runs) {
        if (fn === "crash-batch") expect(r.events.length).toBeLessThanOrEqual(10);
        // One key per run.
        expect(new Set(r.events.map((id) => keyOf.get(id))).size).toBe(1);
      }
      await eventually(
        async () => ((await Promise.all(runs.map((r) => client.getRun(r.runId)))).every((v) => v.status === "COMPLETED") ? true : undefined),
        30_000,
        `every run of ${fn} to complete`,
      );
    }
    // 40 per key, 10 per batch: the full batches of each key, and at most one short one at each kill and at the end.
    expect(runsOf("crash-batch").length).toBeGreaterThanOrEqual(12);
    // The runs the killed executor was executing ran again elsewhere, with the same events.
    expect(killedWith.length).toBeGreaterThan(0);
    for (const runId of killedWith) expect(executions.filter((e) => e.runId === runId).length).toBeGreaterThanOrEqual(2);
  }, 180_000);
});
