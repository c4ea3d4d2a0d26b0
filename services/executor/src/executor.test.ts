import { create } from "@bufbuild/protobuf";
import {
  createLogger,
  createPgliteSql,
  JournalStore,
  MemoryBus,
  migrate,
  serveConnect,
  type RunningServer,
  type Sql,
  TimerStore,
  WaitStore,
  workMessages,
} from "@stepwise/core";
import { EventRecordSchema } from "@stepwise/proto";
import { Stepwise, Worker } from "@stepwise/sdk";
import { handleEvent } from "@stepwise/scheduler";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Executor } from "./executor.js";

/** A journal whose hand-backs take a while, as on a busy database: stop() must wait for them. */
class SlowHandBackStore extends JournalStore {
  override async requeueRun(runId: string, lease: number, requeueAfterMs: number): Promise<boolean> {
    await new Promise((r) => setTimeout(r, 300));
    return super.requeueRun(runId, lease, requeueAfterMs);
  }
}

/** An executor on PGlite and the in-process bus, serving on a free port. */
async function startExecutor(
  makeStore: (sql: Sql) => JournalStore,
  drainTimeoutMs?: number,
  shared?: { sql: Sql; bus: MemoryBus },
) {
  const sql = shared?.sql ?? (await createPgliteSql());
  if (!shared) await migrate(sql);
  const store = makeStore(sql);
  const bus = shared?.bus ?? new MemoryBus();
  const executor = new Executor({
    store,
    timers: new TimerStore(sql),
    waits: new WaitStore(sql),
    bus,
    log: createLogger("test", "silent"),
    leaseMs: 60_000,
    requeueAfterMs: 60_000,
    heartbeatMs: 1_000,
    ...(drainTimeoutMs !== undefined ? { drainTimeoutMs } : {}),
  });
  const server = await serveConnect(executor.routes, 0, "127.0.0.1");
  executor.start();
  return { sql, store, bus, executor, server };
}

// The executor on the embedded store and bus, with a real SDK worker over a
// real Connect stream: what happens to runs when the executor stops.
describe("Executor.stop", () => {
  let sql: Sql;
  let store: JournalStore;
  let bus: MemoryBus;
  let executor: Executor;
  let server: RunningServer;
  let worker: Worker | undefined;

  beforeEach(async () => {
    ({ sql, store, bus, executor, server } = await startExecutor((db) => new SlowHandBackStore(db), 200));
  });

  afterEach(async () => {
    await worker?.kill();
    await server.close();
    await bus.close();
    await sql.close();
  });

  it("hands a run still executing after the drain timeout back to the queue before it resolves", async () => {
    const client = new Stepwise({ appId: "stopping", url: "http://unused" });
    let entered!: () => void;
    const inStep = new Promise<void>((r) => (entered = r));
    const fn = client.createFunction({ id: "hang", triggers: [{ event: "go" }] }, async ({ step }) => {
      await step.run("first", () => 1);
      await step.run("hang", () => (entered(), new Promise(() => {})));
    });
    worker = new Worker({ url: `http://127.0.0.1:${server.port}`, functions: [fn], handleSignals: false, maxReconnectDelayMs: 60_000 });
    await worker.connect();
    const [run] = await handleEvent(
      create(EventRecordSchema, { id: "ev-1", name: "go", dataJson: "{}", tsMs: 1n, receivedAtMs: 1n }),
      { store, waits: new WaitStore(sql), bus },
    );
    await inStep;
    expect((await store.getRun(run!.runId))?.status).toBe("RUNNING");

    await executor.stop();
    // Handed back at once: QUEUED, its work on the bus, the journaled step kept.
    const after = await store.getRun(run!.runId);
    expect(after?.status).toBe("QUEUED");
    expect(after?.steps.map((s) => s.key)).toEqual(["first:0"]);
    const work: string[] = [];
    for await (const d of bus.pullWork("stopping", 10, 50, new AbortController().signal)) {
      work.push(d.data.runId);
      d.ack();
    }
    expect(work).toEqual([run!.runId]);
  });
});

// One work message carries the runs of one function that became ready
// together: the executor claims them as its workers have slots.
describe("Executor with work messages of many runs", () => {
  let sql: Sql;
  let store: JournalStore;
  let bus: MemoryBus;
  let executor: Executor;
  let server: RunningServer;
  let worker: Worker | undefined;

  beforeEach(async () => {
    ({ sql, store, bus, executor, server } = await startExecutor((db) => new JournalStore(db)));
  });

  afterEach(async () => {
    await worker?.close();
    await executor.stop();
    await server.close();
    await bus.close();
    await sql.close();
  });

  /** QUEUED runs of `name`, created without publishing their work. */
  async function queuedRuns(name: string, n: number) {
    const recorded = await store.recordEventsMatching(
      Array.from({ length: n }, (_, i) => ({ id: `${name}-${i}`, name, dataJson: `{"i":${i}}`, tsMs: 1, receivedAtMs: 1 })),
    );
    return recorded.flatMap((r) => r.runs);
  }

  it("runs the 12 runs of one message on a 2-slot worker, never more than 2 at once, and acks it once", async () => {
    const client = new Stepwise({ appId: "batch", url: "http://unused" });
    let running = 0;
    let most = 0;
    const fn = client.createFunction({ id: "work", triggers: [{ event: "go" }] }, async ({ event, step }) =>
      step.run("only", async () => {
        most = Math.max(most, ++running);
        await new Promise((r) => setTimeout(r, 20));
        running--;
        return event.data["i"];
      }),
    );
    worker = new Worker({ url: `http://127.0.0.1:${server.port}`, functions: [fn], handleSignals: false, capacity: 2 });
    await worker.connect();
    const runs = await queuedRuns("go", 12);
    const messages = workMessages(runs);
    expect(messages).toHaveLength(1);
    await bus.publishWork(messages);
    for (let i = 0; i < 200; i++) {
      const all = await Promise.all(runs.map((r) => store.getRun(r.runId)));
      if (all.every((r) => r?.status === "COMPLETED")) break;
      await new Promise((r) => setTimeout(r, 25));
    }
    const ended = await Promise.all(runs.map((r) => store.getRun(r.runId)));
    expect(ended.map((r) => r?.status)).toEqual(runs.map(() => "COMPLETED"));
    expect(ended.map((r) => r?.output)).toEqual(runs.map((_, i) => i));
    expect(most).toBe(2);
    // Acked, not left to be redelivered.
    await executor.stop();
    const left: string[] = [];
    for await (const d of bus.pullWork("batch", 10, 50, new AbortController().signal)) left.push(d.data.runId);
    expect(left).toEqual([]);
  });

  it("leaves the runs of a function no worker here serves on the queue, unclaimed", async () => {
    const client = new Stepwise({ appId: "batch", url: "http://unused" });
    const fn = client.createFunction({ id: "served", triggers: [{ event: "served" }] }, async () => 1);
    worker = new Worker({ url: `http://127.0.0.1:${server.port}`, functions: [fn], handleSignals: false, capacity: 4 });
    await worker.connect();
    await store.registerFunctions("batch", [
      { id: "served", name: "served", eventTriggers: ["served"], config: {} },
      { id: "other", name: "other", eventTriggers: ["other"], config: {} },
    ]);
    const runs = await queuedRuns("other", 3);
    await bus.publishWork(workMessages(runs));
    await new Promise((r) => setTimeout(r, 300));
    const states = await Promise.all(runs.map((r) => store.getRun(r.runId)));
    expect(states.map((r) => r?.status)).toEqual(["QUEUED", "QUEUED", "QUEUED"]);
  });
  it("gives a message back when the worker for its other runs goes away, so another executor runs them", async () => {
    const other = await startExecutor((db) => new JournalStore(db), undefined, { sql, bus });
    const client = new Stepwise({ appId: "batch", url: "http://unused" });
    const fn = client.createFunction({ id: "work", triggers: [{ event: "go" }] }, async ({ event, step }) =>
      step.run("only", async () => {
        await new Promise((r) => setTimeout(r, 200));
        return event.data["i"];
      }),
    );
    worker = new Worker({ url: `http://127.0.0.1:${server.port}`, functions: [fn], handleSignals: false, capacity: 1 });
    await worker.connect();
    const runs = await queuedRuns("go", 4);
    await bus.publishWork(workMessages(runs));
    // One run is taken by the one slot; the other three wait in this executor's backlog.
    for (let i = 0; i < 100 && (await store.getRun(runs[0]!.runId))?.status !== "RUNNING"; i++) await new Promise((r) => setTimeout(r, 20));
    await worker.kill();
    worker = new Worker({ url: `http://127.0.0.1:${other.server.port}`, functions: [fn], handleSignals: false, capacity: 4 });
    await worker.connect();
    for (let i = 0; i < 300; i++) {
      const all = await Promise.all(runs.map((r) => store.getRun(r.runId)));
      if (all.every((r) => r?.status === "COMPLETED")) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    const ended = await Promise.all(runs.map((r) => store.getRun(r.runId)));
    expect(ended.map((r) => r?.status)).toEqual(runs.map(() => "COMPLETED"));
    await worker.close();
    worker = undefined;
    await other.executor.stop();
    await other.server.close();
  }, 30_000);
});
