import { create } from "@bufbuild/protobuf";
import { createLogger, createPgliteSql, JournalStore, MemoryBus, migrate, type Sql, WaitStore } from "@stepwise/core";
import { EventRecordSchema, type RunWork } from "@stepwise/proto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { handleEvent } from "./event-handling.js";
import { Reconciler } from "./reconciler.js";

// The scheduler's two jobs on the embedded store and bus (the same SQL as
// Postgres, the same bus contract as JetStream): events become runs whose
// work is published, and the reconciler re-publishes only work that may
// have been lost.
describe("run creation and reconciliation", () => {
  let sql: Sql;
  let store: JournalStore;
  let bus: MemoryBus;
  const log = createLogger("test", "silent");

  beforeAll(async () => {
    sql = await createPgliteSql();
    await migrate(sql);
    store = new JournalStore(sql);
    bus = new MemoryBus();
    await store.registerFunctions("shop", [
      { id: "charge", name: "charge", eventTriggers: ["order.placed"], config: {} },
      { id: "email", name: "email", eventTriggers: ["order.placed"], config: {} },
    ]);
  });

  afterAll(async () => {
    await bus.close();
    await sql.close();
  });

  async function drain(appId: string, ms = 50): Promise<RunWork[]> {
    const got: RunWork[] = [];
    for await (const d of bus.pullWork(appId, 100, ms, new AbortController().signal)) {
      got.push(d.data);
      d.ack();
    }
    return got;
  }

  const event = (id: string, name = "order.placed") =>
    create(EventRecordSchema, { id, name, dataJson: "{}", tsMs: BigInt(Date.now()), receivedAtMs: BigInt(Date.now()) });

  it("publishes the work of each run an event creates, again on redelivery, and none for an event nobody handles", async () => {
    const runs = await handleEvent(event("e-1"), { store, waits: new WaitStore(sql), bus });
    expect(runs.map((r) => r.functionId).sort()).toEqual(["charge", "email"]);
    expect((await drain("shop")).map((w) => w.runId).sort()).toEqual(runs.map((r) => r.runId).sort());
    // Redelivered before any run was claimed (the ack was lost): the same runs, published again.
    const again = await handleEvent(event("e-1"), { store, waits: new WaitStore(sql), bus });
    expect(again.map((r) => r.runId).sort()).toEqual(runs.map((r) => r.runId).sort());
    expect(await drain("shop")).toHaveLength(2);
    expect(await handleEvent(event("e-2", "nobody.listens"), { store, waits: new WaitStore(sql), bus })).toEqual([]);
    expect(await store.hasEvent("e-2")).toBe(true);
  });

  it("re-publishes runs handed back without confirmation and runs of a dead executor, once; leaves waiting runs alone", async () => {
    const reconciler = new Reconciler({ store, bus, log, requeueAfterMs: 60_000, intervalMs: 1_000 });
    await reconciler.sweep();
    await drain("shop");
    const [waiting, handedBack, orphaned] = [
      ...(await handleEvent(event("e-3"), { store, waits: new WaitStore(sql), bus })),
      ...(await handleEvent(event("e-4"), { store, waits: new WaitStore(sql), bus })),
    ];
    await drain("shop");
    // handedBack: an executor requeued it and died before publishing.
    const a = await store.claimRun(handedBack!.runId, "exec-a", 60_000);
    expect(await store.requeueRun(handedBack!.runId, a!.lease, 1)).toBe(true);
    // orphaned: its executor died holding it; the lease lapses.
    await store.claimRun(orphaned!.runId, "exec-b", 1);
    await new Promise((r) => setTimeout(r, 20));

    expect(await reconciler.sweep()).toBe(2);
    expect((await drain("shop")).map((w) => w.runId).sort()).toEqual([handedBack!.runId, orphaned!.runId].sort());
    // Published and confirmed: a later sweep leaves them, and the waiting run, alone.
    await new Promise((r) => setTimeout(r, 20));
    expect(await reconciler.sweep()).toBe(0);
    expect(await drain("shop")).toEqual([]);
    expect((await store.getRun(waiting!.runId))?.status).toBe("QUEUED");
  });

  it("republishes the work of a dead executor's run within a second of the bus taking work again, not at the requeue deadline", async () => {
    const reconciler = new Reconciler({ store, bus, log, requeueAfterMs: 60_000, intervalMs: 1_000 });
    await reconciler.sweep();
    await drain("shop");
    const [orphaned] = await handleEvent(event("e-bus-down"), { store, waits: new WaitStore(sql), bus });
    await drain("shop");
    await store.claimRun(orphaned!.runId, "exec-c", 1);
    await new Promise((r) => setTimeout(r, 20));
    const publishWork = bus.publishWork.bind(bus);
    let refused = 0;
    bus.publishWork = async () => {
      refused++;
      throw new Error("NATS is down");
    };
    try {
      // The sweep takes the runs (with a new deadline a minute away) and does not fail on the refused publish.
      expect(await reconciler.sweep()).toBeGreaterThanOrEqual(1);
      await new Promise((r) => setTimeout(r, 400));
      expect(refused).toBeGreaterThan(1);
    } finally {
      bus.publishWork = publishWork;
    }
    const back = Date.now();
    const ids: string[] = [];
    while (!ids.includes(orphaned!.runId) && Date.now() - back < 3_000) ids.push(...(await drain("shop", 100)).map((w) => w.runId));
    expect(ids).toContain(orphaned!.runId);
    expect(Date.now() - back).toBeLessThan(1_500);
    // Confirmed once published: the next sweeps leave it alone.
    await new Promise((r) => setTimeout(r, 50));
    expect(await reconciler.sweep()).toBe(0);
  });

  it("holds an event whose runs' publish NATS refused until the retry publishes them, instead of failing it into a backoff", async () => {
    await drain("shop");
    const publishWork = bus.publishWork.bind(bus);
    let refused = 0;
    bus.publishWork = async () => {
      refused++;
      throw new Error("NATS is down");
    };
    let settled = false;
    const handled = handleEvent(event("e-refused"), { store, waits: new WaitStore(sql), bus }).finally(() => (settled = true));
    await new Promise((r) => setTimeout(r, 500));
    expect(settled).toBe(false);
    expect(refused).toBeGreaterThan(1);
    bus.publishWork = publishWork;
    const back = Date.now();
    const runs = await handled;
    expect(Date.now() - back).toBeLessThan(1_500);
    expect(runs).toHaveLength(2);
    expect((await drain("shop")).map((w) => w.runId).sort()).toEqual(runs.map((r) => r.runId).sort());
  });

  it("publishes the events a process left in the outbox past the grace, once, and leaves younger ones to it", async () => {
    await sql.query(
      `INSERT INTO event_outbox (id, name, data, ts, created_at) VALUES
         ('left-behind', 'stepwise/run.cancelled', '{"run_id":"r1"}', now(), now() - interval '1 minute'),
         ('just-made', 'stepwise/run.cancelled', '{"run_id":"r2"}', now(), now())`,
    );
    const published: Array<{ id: string; name: string; data: unknown }> = [];
    const sub = await bus.consumeEvents(async (record) => {
      published.push({ id: record.id, name: record.name, data: JSON.parse(record.dataJson) });
    }, { concurrency: 1 });
    try {
      const reconciler = new Reconciler({ store, bus, log, requeueAfterMs: 60_000, intervalMs: 1_000 });
      expect(await reconciler.sweepOutbox()).toBe(1);
      expect(await reconciler.sweepOutbox()).toBe(0);
      for (let i = 0; i < 100 && published.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
      expect(published).toEqual([{ id: "left-behind", name: "stepwise/run.cancelled", data: { run_id: "r1" } }]);
      expect((await sql.query("SELECT id FROM event_outbox")).map((r) => r["id"])).toEqual(["just-made"]);
    } finally {
      await sub.stop();
    }
  });

  it("gathers the events of a batched function into the window of their key, when its condition holds, and makes no run of them", async () => {
    await store.registerFunctions("batch", [
      {
        id: "tally",
        name: "tally",
        eventTriggers: [],
        conditionalTriggers: [{ event: "vote.cast", condition: "event.data.valid == true" }],
        runRules: { cancelOn: [], window: { kind: "batch", maxSize: 2, timeoutMs: 60_000, key: "event.data.poll" } },
        config: {},
      },
    ]);
    const vote = (id: string, data: Record<string, unknown>) =>
      create(EventRecordSchema, { id, name: "vote.cast", dataJson: JSON.stringify(data), tsMs: BigInt(Date.now()), receivedAtMs: BigInt(Date.now()) });
    const deps = { store, waits: new WaitStore(sql), bus };
    expect(await handleEvent(vote("v-1", { poll: "a", valid: true }), deps)).toEqual([]);
    expect(await handleEvent(vote("v-2", { poll: "a", valid: false }), deps)).toEqual([]);
    expect(await handleEvent(vote("v-3", { poll: "b", valid: true }), deps)).toEqual([]);
    // Delivered again: not gathered twice.
    await handleEvent(vote("v-1", { poll: "a", valid: true }), deps);
    const windows = await sql.query<{ key: string; size: number }>("SELECT key, size FROM event_windows WHERE app_id = 'batch' ORDER BY key");
    expect(windows.map((w) => [w.key, Number(w.size)])).toEqual([
      ["a", 1],
      ["b", 1],
    ]);
    await handleEvent(vote("v-4", { poll: "a", valid: true }), deps);
    const made = await store.closeDueWindows(10, 60_000);
    expect(made.publish).toHaveLength(1);
    const claimed = await store.claimRun(made.publish[0]!.runId, "exec", 60_000);
    expect(claimed?.events?.map((e) => e.id).sort()).toEqual(["v-1", "v-4"]);
  });
});
