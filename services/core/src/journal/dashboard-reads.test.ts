import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { testBackends, type TestBackend, type TestDatabase, uniq } from "../testing/test-database.js";
import { JournalStore } from "./journal-store.js";
import { migrate } from "./migrations.js";
import { TimerStore } from "./timer-store.js";
import type { EventInput } from "./types.js";
import type { WorkerExecutor, WorkerRecord } from "./worker-records.js";

// What the dashboard reads besides runs, on Postgres and on PGlite: the
// connected workers the executors record (migration 9), the stored events
// with their runs, the counts of runs by function and status, and what a
// run shows of its links and awaits.

const HOUR = 3_600_000;

function dashboardSuite(backend: TestBackend): void {
  describe(`dashboard reads on ${backend.name}`, () => {
    let db: TestDatabase;
    let store: JournalStore;
    let timers: TimerStore;

    beforeAll(async () => {
      db = await backend.open();
      await migrate(db.sql, db.migrateOptions);
      store = new JournalStore(db.sql);
      timers = new TimerStore(db.sql);
    });

    afterAll(async () => {
      await db?.drop();
    });

    function worker(appId: string, over: Partial<WorkerRecord> = {}): WorkerRecord {
      return {
        sessionId: crypto.randomUUID(),
        workerId: uniq("w"),
        appId,
        functionIds: ["a", "b"],
        capacity: 4,
        slotsInUse: 0,
        sdk: "@stepwise/sdk/0.1.0",
        connectedAt: new Date(Date.now() - 1000),
        ...over,
      };
    }

    const executor = (over: Partial<WorkerExecutor> = {}): WorkerExecutor => ({
      executorId: uniq("exec"),
      executorHost: "host-1",
      expiresInMs: 60_000,
      ...over,
    });

    it("workers: recorded on register, rewritten at heartbeats, removed at the end, left out once expired", async () => {
      const appId = uniq("app");
      const ex = executor();
      const w1 = worker(appId);
      const w2 = worker(appId, { functionIds: ["c"], capacity: 1 });
      await store.recordWorkers(ex, [w1]);
      await store.recordWorkers(ex, [w2]);
      let listed = await store.listWorkers(appId);
      expect(listed.map((w) => w.workerId).sort()).toEqual([w1.workerId, w2.workerId].sort());
      expect(listed.find((w) => w.workerId === w1.workerId)).toMatchObject({
        appId,
        functionIds: ["a", "b"],
        capacity: 4,
        slotsInUse: 0,
        sdk: "@stepwise/sdk/0.1.0",
        executorId: ex.executorId,
        executorHost: "host-1",
        connectedAt: w1.connectedAt,
      });

      // A heartbeat rewrites the slots in use, not the rest.
      const before = listed.find((w) => w.workerId === w1.workerId)!.heartbeatAt;
      await store.recordWorkers(ex, [{ ...w1, slotsInUse: 3 }, { ...w2, slotsInUse: 1 }]);
      listed = await store.listWorkers(appId);
      expect(listed.find((w) => w.workerId === w1.workerId)).toMatchObject({ slotsInUse: 3, connectedAt: w1.connectedAt });
      expect(listed.find((w) => w.workerId === w1.workerId)!.heartbeatAt.getTime()).toBeGreaterThanOrEqual(before.getTime());
      expect(await store.listWorkers(uniq("other-app"))).toEqual([]);
      expect((await store.listWorkers()).filter((w) => w.appId === appId)).toHaveLength(2);

      await store.removeWorker(w1.sessionId);
      expect((await store.listWorkers(appId)).map((w) => w.workerId)).toEqual([w2.workerId]);

      // An executor that stopped writing: its rows expire, are left out,
      // and another executor's next write deletes them.
      const dead = executor({ expiresInMs: 1 });
      const stale = worker(appId);
      await store.recordWorkers(dead, [stale]);
      await new Promise((r) => setTimeout(r, 20));
      expect((await store.listWorkers(appId)).map((w) => w.workerId)).toEqual([w2.workerId]);
      await store.recordWorkers(ex, [w2]);
      expect(await db.sql.query("SELECT 1 FROM workers WHERE session_id = $1", [stale.sessionId])).toEqual([]);
    });

    it("events: newest first with the runs each started, by name, paged without gaps or repeats", async () => {
      const appId = uniq("app");
      const name = uniq("evt");
      const other = uniq("evt");
      await store.registerFunctions(appId, [
        { id: "f1", name: "F1", eventTriggers: [name], config: {} },
        { id: "f2", name: "F2", eventTriggers: [name], config: {} },
      ]);
      const ids: string[] = [];
      for (let i = 0; i < 7; i++) {
        const ev: EventInput = { id: uniq("e"), name: i === 3 ? other : name, dataJson: JSON.stringify({ i }), tsMs: Date.now(), receivedAtMs: Date.now() };
        await store.recordEvent(ev);
        ids.push(ev.id);
      }
      const ofName = ids.filter((_, i) => i !== 3).reverse();
      const first = await store.listEvents({ name, limit: 4 });
      expect(first.map((e) => e.id)).toEqual(ofName.slice(0, 4));
      const last = first[3]!;
      const second = await store.listEvents({ name, limit: 4, before: { storedAtUs: last.storedAtUs, id: last.id } });
      expect(second.map((e) => e.id)).toEqual(ofName.slice(4));
      expect(first[0]).toMatchObject({ name, data: { i: 6 } });
      expect(first[0]!.runs.map((r) => r.functionId).sort()).toEqual(["f1", "f2"]);
      expect(first[0]!.runs.every((r) => r.status === "QUEUED" && r.event.id === ids[6])).toBe(true);

      const all = await store.listEvents({ limit: 1000 });
      const mine = all.filter((e) => ids.includes(e.id));
      expect(mine.map((e) => e.id)).toEqual([...ids].reverse());
      expect(mine.find((e) => e.name === other)!.runs).toEqual([]);
    });

    it("run counts: the runs created since a time, by function and status", async () => {
      const appId = uniq("app");
      const name = uniq("evt");
      await store.registerFunctions(appId, [
        { id: "f1", name: "F1", eventTriggers: [name], config: {} },
        { id: "f2", name: "F2", eventTriggers: [uniq("never")], config: {} },
      ]);
      const since = new Date(Date.now() - 60_000);
      const refs = [];
      for (let i = 0; i < 3; i++) {
        const [ref] = await store.recordEvent({ id: uniq("e"), name, dataJson: "{}", tsMs: Date.now(), receivedAtMs: Date.now() });
        refs.push(ref!);
      }
      await store.cancelRun(refs[0]!.runId, "test");
      const counts = await store.countRuns(since, appId);
      expect(counts.sort((a, b) => a.status.localeCompare(b.status))).toEqual([
        { appId, functionId: "f1", status: "CANCELLED", count: 1 },
        { appId, functionId: "f1", status: "QUEUED", count: 2 },
      ]);
      expect(await store.countRuns(new Date(Date.now() + HOUR), appId)).toEqual([]);
    });

    it("a WAITING run shows what it waits for; an invoked run its parent; an invoke step its child", async () => {
      const appId = uniq("app");
      const name = uniq("evt");
      await store.registerFunctions(appId, [
        { id: "parent", name: "Parent", eventTriggers: [name], config: {} },
        { id: "child", name: "Child", eventTriggers: [uniq("never")], config: {} },
      ]);
      const [ref] = await store.recordEvent({ id: uniq("e"), name, dataJson: '{"orderId":"o-1"}', tsMs: Date.now(), receivedAtMs: Date.now() });
      const claim = (await store.claimRun(ref!.runId, uniq("exec"), 60_000))!;
      const due = Date.now() + HOUR;
      const invoke = { stepKey: "sub:0", stepId: "sub", kind: "invoke" as const, dueAtMs: null, appId, functionId: "child", dataJson: "{}" };
      const started = await store.startInvocations(ref!.runId, claim.lease, [invoke], 60_000);
      expect(started.kind).toBe("started");
      const outcome = await timers.suspend(ref!.runId, claim.lease, claim.wakes, [
        { stepKey: "nap:0", stepId: "nap", kind: "sleep", dueAtMs: due },
        { stepKey: "ship:0", stepId: "ship", kind: "wait", dueAtMs: due, event: "shipment.created", condition: "event.data.orderId == async.data.orderId", equality: { eventPath: ["data", "orderId"], asyncPath: ["data", "orderId"] } },
        invoke,
      ], 60_000);
      expect(outcome.kind).toBe("waiting");
      const run = (await store.getRun(ref!.runId))!;
      expect(run.status).toBe("WAITING");
      const childId = started.kind === "started" ? started.runs[0]!.runId : "";
      expect(run.awaits).toEqual([
        { key: "nap:0", id: "nap", kind: "sleep", dueAt: new Date(due) },
        expect.objectContaining({ key: "ship:0", id: "ship", kind: "wait", dueAt: new Date(due), eventName: "shipment.created", condition: "event.data.orderId == async.data.orderId", since: expect.any(Date) }),
        { key: "sub:0", id: "sub", kind: "invoke", dueAt: null, invokedRunId: childId },
      ]);
      expect(run.invokedBy).toBeNull();

      const child = (await store.getRun(childId))!;
      expect(child.invokedBy).toEqual({ runId: ref!.runId, stepKey: "sub:0" });
      expect(child.awaits).toEqual([]);

      // The child ends: the parent's invoke step is journaled, and names it.
      const childClaim = (await store.claimRun(childId, uniq("exec"), 60_000))!;
      await store.completeRun(childId, childClaim.lease, '"done"');
      const after = (await store.getRun(ref!.runId))!;
      expect(after.steps.find((s) => s.key === "sub:0")).toMatchObject({ kind: "invoke", invokedRunId: childId, output: "done" });
      expect(after.awaits).toEqual([]);
    });
  });
}

for (const backend of testBackends("dash")) dashboardSuite(backend);
