import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { JournalStore } from "./journal-store.js";
import type { AttemptRecord, EventInput, JournalEntry, RunRef, RunView, StepRecord, StoredError } from "./types.js";
import { testBackends, type TestBackend, type TestDatabase, uniq } from "../testing/test-database.js";
import { migrate, migrations } from "./migrations.js";
import { quoteIdent } from "./sql.js";

// One conformance suite, run against real Postgres and against PGlite: the
// store must behave the same on both, since `stepwise dev` runs on the one
// and deployments on the other.

const backends = testBackends("js");

const allVersions = migrations.map((m) => m.version);
const T0 = 1_700_000_000_123;
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));


function eventInput(name: string, over: Partial<EventInput> = {}): EventInput {
  return {
    id: uniq("ev"),
    name,
    dataJson: '{"order":{"id":"o-1","total":12.5},"tags":["a","b"]}',
    tsMs: T0,
    receivedAtMs: T0 + 1000,
    ...over,
  };
}

function stepRecord(runId: string, lease: number, stepKey: string, over: Partial<StepRecord> = {}): StepRecord {
  return {
    runId,
    lease,
    stepKey,
    stepId: stepKey.split(":")[0] ?? stepKey,
    attempt: 1,
    startedAtMs: T0 + 10,
    endedAtMs: T0 + 20,
    outputJson: "1",
    ...over,
  };
}

/** A journal entry with its JSON text parsed, so jsonb's re-serialisation does not matter. */
function parsedEntry(e: JournalEntry): { stepKey: string; output?: unknown; error?: StoredError } {
  return e.error === undefined ? { stepKey: e.stepKey, output: JSON.parse(e.outputJson) } : { stepKey: e.stepKey, error: e.error };
}

function ids(refs: readonly { runId: string }[]): string[] {
  return refs.map((r) => r.runId).sort();
}

function storeSuite(backend: TestBackend): void {
  describe(`JournalStore on ${backend.name}`, () => {
    let db: TestDatabase;
    let store: JournalStore;
    let firstMigration: number[];
    const extra: TestDatabase[] = [];

    beforeAll(async () => {
      db = await backend.open();
      firstMigration = await migrate(db.sql, db.migrateOptions);
      store = new JournalStore(db.sql);
    });

    afterAll(async () => {
      for (const d of extra) await d.drop();
      await db?.drop();
    });

    /** Registers one function triggered by a fresh event name and records one event for it. */
    async function queuedRun(): Promise<RunRef & { event: EventInput }> {
      const appId = uniq("app");
      const name = uniq("evt");
      await store.registerFunctions(appId, [{ id: "fn", name: "Fn", eventTriggers: [name], config: {} }]);
      const event = eventInput(name);
      const refs = await store.recordEvent(event);
      expect(refs).toHaveLength(1);
      return { ...refs[0]!, event };
    }

    async function claimed(executorId: string, leaseMs = 60_000) {
      const ref = await queuedRun();
      const claim = await store.claimRun(ref.runId, executorId, leaseMs);
      expect(claim).not.toBeNull();
      return { ...ref, lease: claim!.lease };
    }

    /** A run handed back to the queue (as an executor does) whose publish is unconfirmed until deadlineMs. */
    async function requeuedRun(deadlineMs: number) {
      const run = await claimed(uniq("exec"));
      expect(await store.requeueRun(run.runId, run.lease, deadlineMs)).toBe(true);
      return run;
    }

    /** Pushes every run earlier tests left due into the future, so a sweep sees only this test's runs. */
    async function settleSweep(): Promise<void> {
      let swept: RunRef[];
      do swept = await store.reclaimStale(1000, 600_000);
      while (swept.length > 0);
    }

    async function mustGet(runId: string): Promise<RunView> {
      const run = await store.getRun(runId);
      expect(run).not.toBeNull();
      return run!;
    }

    it("migrate applies every version once; a second call applies nothing", async () => {
      expect(firstMigration).toEqual(allVersions);
      expect(await migrate(db.sql, db.migrateOptions)).toEqual([]);
      const rows = await db.sql.query<{ version: number }>("SELECT version FROM schema_migrations ORDER BY version");
      expect(rows.map((r) => Number(r.version))).toEqual(allVersions);
    });

    /** Three services starting together: each migrates over its own, already open, connection. */
    async function migrateConcurrently(fresh: TestDatabase): Promise<void> {
      await Promise.all([1, 2, 3].map(() => fresh.sql.query("SELECT pg_sleep(0.02)")));
      const results = await Promise.all([1, 2, 3].map(() => migrate(fresh.sql, fresh.migrateOptions)));
      expect(results.flat().sort((a, b) => a - b)).toEqual(allVersions);
      expect(results.filter((r) => r.length > 0)).toHaveLength(1);
      const rows = await fresh.sql.query<{ n: string | number }>("SELECT count(*) AS n FROM schema_migrations");
      expect(Number(rows[0]?.n)).toBe(allVersions.length);
      // The schema works: a run can be created in it.
      const freshStore = new JournalStore(fresh.sql);
      await freshStore.registerFunctions("app", [{ id: "fn", name: "Fn", eventTriggers: ["e"], config: {} }]);
      expect(await freshStore.recordEvent(eventInput("e"))).toHaveLength(1);
    }

    if (backend.pooled) it("concurrent migrate calls into an existing empty schema apply the migrations once", async () => {
      const fresh = await backend.open();
      extra.push(fresh);
      if (fresh.migrateOptions.schema) {
        await fresh.sql.query(`CREATE SCHEMA ${quoteIdent(fresh.migrateOptions.schema)}`);
      }
      await migrateConcurrently(fresh);
    });

    // Concurrent CREATE SCHEMA IF NOT EXISTS of one name race in Postgres
    // (duplicate key in pg_namespace_nspname_index): migrate() must create
    // the schema under its advisory lock. PGlite has a single connection, so
    // these two only apply to Postgres.
    if (backend.pooled) it("concurrent migrate calls that create the schema apply the migrations once", async () => {
      // A race: several rounds, so that it loses reliably when it can lose.
      for (let round = 0; round < 5; round++) {
        const fresh = await backend.open();
        extra.push(fresh);
        await migrateConcurrently(fresh);
      }
    });

    it("recordEvent creates one QUEUED run per function whose trigger matches, none for other names", async () => {
      const name = uniq("order.placed");
      const other = uniq("order.cancelled");
      const app1 = uniq("app");
      const app2 = uniq("app");
      await store.registerFunctions(app1, [
        { id: "fn-a", name: "A", eventTriggers: [name, other, name], config: { retries: 3 } },
        { id: "fn-b", name: "B", eventTriggers: [name], config: {} },
        { id: "fn-c", name: "C", eventTriggers: [other], config: {} },
      ]);
      await store.registerFunctions(app2, [{ id: "fn-a", name: "A", eventTriggers: [name], config: null }]);

      const ev = eventInput(name);
      const refs = await store.recordEvent(ev);
      expect(refs.map((r) => `${r.appId}/${r.functionId}`).sort()).toEqual(
        [`${app1}/fn-a`, `${app1}/fn-b`, `${app2}/fn-a`].sort(),
      );
      expect(new Set(refs.map((r) => r.runId)).size).toBe(3);

      const runs = await store.listRuns({ eventId: ev.id, limit: 100 });
      expect(ids(runs.map((r) => ({ runId: r.id })))).toEqual(ids(refs));
      for (const run of runs) {
        expect(run.status).toBe("QUEUED");
        expect(run.lease).toBe(0);
        expect(run.startedAt).toBeNull();
        expect(run.endedAt).toBeNull();
        expect(run.hasOutput).toBe(false);
        expect(run.error).toBeNull();
        expect(run.event.id).toBe(ev.id);
        expect(run.event.name).toBe(name);
        expect(run.event.data).toEqual(JSON.parse(ev.dataJson));
        expect(run.event.ts.getTime()).toBe(ev.tsMs);
      }

      // An event no function listens to is still stored, and creates no run.
      const unmatched = eventInput(uniq("nobody.listens"));
      expect(await store.recordEvent(unmatched)).toEqual([]);
      expect(await store.hasEvent(unmatched.id)).toBe(true);
      expect(await store.listRuns({ eventId: unmatched.id, limit: 100 })).toEqual([]);
      expect(await store.hasEvent(uniq("never-sent"))).toBe(false);

      // Registering again replaces the triggers.
      await store.registerFunctions(app1, [{ id: "fn-a", name: "A", eventTriggers: [], config: {} }]);
      const again = await store.recordEvent(eventInput(name));
      expect(again.map((r) => `${r.appId}/${r.functionId}`).sort()).toEqual([`${app1}/fn-b`, `${app2}/fn-a`].sort());
    });

    it("recordEvent with a known id creates no second run and returns the runs still QUEUED", async () => {
      const name = uniq("evt");
      const appId = uniq("app");
      await store.registerFunctions(appId, [
        { id: "fn-1", name: "One", eventTriggers: [name], config: {} },
        { id: "fn-2", name: "Two", eventTriggers: [name], config: {} },
      ]);
      const ev = eventInput(name);
      const first = await store.recordEvent(ev);
      expect(first).toHaveLength(2);

      // Redelivery of the same event: same runs handed back so their work is published again.
      const redelivered = await store.recordEvent(ev);
      expect(ids(redelivered)).toEqual(ids(first));
      expect(await store.listRuns({ eventId: ev.id, limit: 100 })).toHaveLength(2);

      // Once a run is claimed it is no longer handed back; the other still is.
      const one = first.find((r) => r.functionId === "fn-1")!;
      const two = first.find((r) => r.functionId === "fn-2")!;
      expect(await store.claimRun(one.runId, uniq("exec"), 60_000)).not.toBeNull();
      expect(await store.recordEvent(ev)).toEqual([two]);
      expect(await store.claimRun(two.runId, uniq("exec"), 60_000)).not.toBeNull();
      expect(await store.recordEvent(ev)).toEqual([]);
      expect(await store.listRuns({ eventId: ev.id, limit: 100 })).toHaveLength(2);
    });

    it("claimRun returns the event and an empty journal, and bumps the lease", async () => {
      const ref = await queuedRun();
      const executor = uniq("exec");
      const claim = await store.claimRun(ref.runId, executor, 60_000);
      expect(claim).not.toBeNull();
      expect(claim!.runId).toBe(ref.runId);
      expect(claim!.appId).toBe(ref.appId);
      expect(claim!.functionId).toBe(ref.functionId);
      expect(claim!.lease).toBe(1);
      expect(claim!.event.id).toBe(ref.event.id);
      expect(claim!.event.name).toBe(ref.event.name);
      expect(JSON.parse(claim!.event.dataJson)).toEqual(JSON.parse(ref.event.dataJson));
      expect(claim!.event.tsMs).toBe(ref.event.tsMs);
      expect(claim!.journal).toEqual([]);

      const run = await mustGet(ref.runId);
      expect(run.status).toBe("RUNNING");
      expect(run.lease).toBe(1);
      expect(run.startedAt).toBeInstanceOf(Date);
      expect(run.endedAt).toBeNull();

      expect(await store.claimRun(randomUUID(), executor, 60_000)).toBeNull();
    });

    it("claimRuns claims each run once, even when its id is given twice in one batch", async () => {
      const a = await queuedRun();
      const b = await queuedRun();
      const claims = await store.claimRuns([a.runId, b.runId, a.runId, randomUUID()], uniq("exec"), 60_000);
      expect(claims.map((c) => c?.runId ?? null)).toEqual([a.runId, b.runId, null, null]);
      expect(claims[0]?.lease).toBe(1);
      expect((await store.getRun(a.runId))?.lease).toBe(1);
    });

    it("a run under a valid lease cannot be claimed; after the lease lapses another executor can", async () => {
      const ref = await queuedRun();
      const first = await store.claimRun(ref.runId, uniq("exec"), 50);
      expect(first?.lease).toBe(1);
      expect(await store.claimRun(ref.runId, uniq("exec"), 50)).toBeNull();

      await sleep(120);
      const second = await store.claimRun(ref.runId, uniq("exec"), 60_000);
      expect(second?.lease).toBe(2);
      expect(await store.claimRun(ref.runId, uniq("exec"), 60_000)).toBeNull();
      expect((await mustGet(ref.runId)).lease).toBe(2);
    });

    it("journalStep: the first write of a step key wins, a second write gets the first result", async () => {
      const run = await claimed(uniq("exec"));
      expect(await store.journalStep(stepRecord(run.runId, run.lease, "charge:0", { outputJson: '{"paid":1}' }))).toEqual({
        kind: "journaled",
      });

      const second = await store.journalStep(stepRecord(run.runId, run.lease, "charge:0", { outputJson: '{"paid":2}' }));
      expect(second.kind).toBe("existing");
      if (second.kind !== "existing") return;
      expect(parsedEntry(second.entry)).toEqual({ stepKey: "charge:0", output: { paid: 1 } });

      // An error is a result too: it wins over a later output.
      const err: StoredError = { name: "Error", message: "card declined", nonRetriable: true };
      expect(
        await store.journalStep(stepRecord(run.runId, run.lease, "notify:0", { outputJson: undefined, error: err })),
      ).toEqual({ kind: "journaled" });
      const late = await store.journalStep(stepRecord(run.runId, run.lease, "notify:0", { outputJson: '"sent"' }));
      expect(late).toEqual({ kind: "existing", entry: { stepKey: "notify:0", error: err } });

      const view = await mustGet(run.runId);
      expect(view.steps.map((s) => [s.key, s.output, s.error])).toEqual([
        ["charge:0", { paid: 1 }, null],
        ["notify:0", null, err],
      ]);
    });

    it("journalStep under a lost lease is refused and writes nothing", async () => {
      const ref = await queuedRun();
      const stale = await store.claimRun(ref.runId, uniq("exec"), 50);
      expect(stale).not.toBeNull();
      await sleep(120);
      const current = await store.claimRun(ref.runId, uniq("exec"), 60_000);
      expect(current?.lease).toBe(2);

      expect(await store.journalStep(stepRecord(ref.runId, stale!.lease, "a:0"))).toEqual({ kind: "lease-lost" });
      expect((await mustGet(ref.runId)).steps).toEqual([]);

      // The holder writes; a stale write of the same key is still refused, not answered with the result.
      expect(await store.journalStep(stepRecord(ref.runId, current!.lease, "a:0", { outputJson: '"new"' }))).toEqual({
        kind: "journaled",
      });
      expect(await store.journalStep(stepRecord(ref.runId, stale!.lease, "a:0"))).toEqual({ kind: "lease-lost" });

      // Nothing is journaled for a finished run, nor for an unknown one.
      expect(await store.completeRun(ref.runId, current!.lease, "null")).not.toBeNull();
      expect(await store.journalStep(stepRecord(ref.runId, current!.lease, "b:0"))).toEqual({ kind: "lease-lost" });
      expect(await store.journalStep(stepRecord(randomUUID(), 1, "a:0"))).toEqual({ kind: "lease-lost" });
      expect((await mustGet(ref.runId)).steps.map((s) => [s.key, s.output])).toEqual([["a:0", "new"]]);
    });

    it("a claim carries the run's times and its event's run count, and completeRun the end time, as getRun reads them", async () => {
      const appId = uniq("app");
      const name = uniq("evt");
      await store.registerFunctions(appId, [
        { id: "one", name: "One", eventTriggers: [name], config: {} },
        { id: "two", name: "Two", eventTriggers: [name], config: {} },
      ]);
      const refs = await store.recordEvent(eventInput(name));
      expect(refs).toHaveLength(2);
      const claim = await store.claimRun(refs[0]!.runId, uniq("exec"), 60_000);
      expect(claim?.eventRuns).toBe(2);
      const endedAtMs = (await store.completeRun(refs[0]!.runId, claim!.lease, '{"b":1,"a":2}'))?.endedAtMs;
      const view = await mustGet(refs[0]!.runId);
      expect(claim!.createdAtMs).toBe(view.createdAt.getTime());
      expect(claim!.startedAtMs).toBe(view.startedAt!.getTime());
      expect(endedAtMs).toBe(view.endedAt!.getTime());
      // A second claim (after a lapse) keeps the first start.
      const other = await store.claimRun(refs[1]!.runId, uniq("exec"), 1);
      await sleep(20);
      const retaken = await store.claimRun(refs[1]!.runId, uniq("exec"), 60_000);
      expect(retaken!.startedAtMs).toBe(other!.startedAtMs);
      expect(retaken!.eventRuns).toBe(2);
    });

    it("claimRun returns the journal in write order, with output text and errors", async () => {
      const run = await claimed(uniq("exec"));
      const err: StoredError = {
        name: "RetryAfterError",
        message: "rate limited",
        stack: "RetryAfterError: rate limited\n    at step",
        cause: { name: "Error", message: "429" },
      };
      const writes: StepRecord[] = [
        stepRecord(run.runId, run.lease, "second:0", { outputJson: '"B"' }),
        stepRecord(run.runId, run.lease, "first:0", { outputJson: undefined, error: err, attempt: 2 }),
        stepRecord(run.runId, run.lease, "parallel:1", { outputJson: '{"nested":[1,{"x":null}],"s":"a\\"b"}' }),
        stepRecord(run.runId, run.lease, "nothing:0", { outputJson: undefined }),
        stepRecord(run.runId, run.lease, "zero:0", { outputJson: "0" }),
      ];
      for (const w of writes) expect(await store.journalStep(w)).toEqual({ kind: "journaled" });
      expect(await store.requeueRun(run.runId, run.lease, 60_000)).toBe(true);

      const again = await store.claimRun(run.runId, uniq("exec"), 60_000);
      expect(again?.lease).toBe(run.lease + 1);
      expect(again!.journal.map(parsedEntry)).toEqual([
        { stepKey: "second:0", output: "B" },
        { stepKey: "first:0", error: err },
        { stepKey: "parallel:1", output: { nested: [1, { x: null }], s: 'a"b' } },
        { stepKey: "nothing:0", output: null },
        { stepKey: "zero:0", output: 0 },
      ]);
      for (const entry of again!.journal) {
        if (entry.error === undefined) expect(typeof entry.outputJson).toBe("string");
        else expect(entry.outputJson).toBeUndefined();
      }
    });

    it("completeRun needs the current lease and stores the output", async () => {
      const run = await claimed(uniq("exec"));
      expect(
        await store.journalStep(stepRecord(run.runId, run.lease, "pay:0", { outputJson: '{"id":"p1"}', attempt: 3 })),
      ).toEqual({ kind: "journaled" });
      expect(
        await store.journalStep(
          stepRecord(run.runId, run.lease, "ship:0", { outputJson: '"s1"', startedAtMs: T0 + 30, endedAtMs: T0 + 45 }),
        ),
      ).toEqual({ kind: "journaled" });

      expect(await store.completeRun(run.runId, run.lease - 1, '{"stale":true}')).toBeNull();
      expect(await store.completeRun(run.runId, run.lease + 1, '{"future":true}')).toBeNull();
      expect((await mustGet(run.runId)).status).toBe("RUNNING");

      expect(await store.completeRun(run.runId, run.lease, '{"ok":true}')).not.toBeNull();
      // Finished: a second end, a failure or a claim are all refused.
      expect(await store.completeRun(run.runId, run.lease, '{"twice":true}')).toBeNull();
      expect((await store.failRun(run.runId, run.lease, { name: "Error", message: "late" })).ok).toBe(false);
      expect(await store.claimRun(run.runId, uniq("exec"), 60_000)).toBeNull();

      const view = await mustGet(run.runId);
      expect(view).toMatchObject({
        id: run.runId,
        appId: run.appId,
        functionId: run.functionId,
        status: "COMPLETED",
        lease: run.lease,
        output: { ok: true },
        hasOutput: true,
        error: null,
        event: { id: run.event.id, name: run.event.name, data: JSON.parse(run.event.dataJson) },
      });
      expect(view.event.ts.getTime()).toBe(T0);
      expect(view.createdAt).toBeInstanceOf(Date);
      expect(view.startedAt).toBeInstanceOf(Date);
      expect(view.endedAt).toBeInstanceOf(Date);
      expect(view.startedAt!.getTime()).toBeGreaterThanOrEqual(view.createdAt.getTime());
      expect(view.endedAt!.getTime()).toBeGreaterThanOrEqual(view.startedAt!.getTime());

      expect(view.steps).toHaveLength(2);
      const [pay, ship] = view.steps;
      expect(pay).toMatchObject({ key: "pay:0", id: "pay", attempt: 3, output: { id: "p1" }, hasOutput: true, error: null });
      expect(pay!.startedAt?.getTime()).toBe(T0 + 10);
      expect(pay!.endedAt?.getTime()).toBe(T0 + 20);
      expect(pay!.journaledAt).toBeInstanceOf(Date);
      expect(ship).toMatchObject({ key: "ship:0", id: "ship", attempt: 1, output: "s1", hasOutput: true, error: null });
      expect(ship!.startedAt?.getTime()).toBe(T0 + 30);
      expect(ship!.endedAt?.getTime()).toBe(T0 + 45);
      expect(ship!.journaledAt.getTime()).toBeGreaterThanOrEqual(pay!.journaledAt.getTime());

      // A JSON null is an output, not the absence of one.
      const nullRun = await claimed(uniq("exec"));
      expect(await store.completeRun(nullRun.runId, nullRun.lease, "null")).not.toBeNull();
      expect(await mustGet(nullRun.runId)).toMatchObject({ status: "COMPLETED", output: null, hasOutput: true });
    });

    it("cancelRun ends a queued or running run CANCELLED, fences the execution, and puts its event in the outbox once", async () => {
      const queued = await queuedRun();
      const q = await store.cancelRun(queued.runId, "not needed");
      expect(q).toMatchObject({ kind: "cancelled", was: "QUEUED", executorId: null, eventId: queued.event.id });
      expect(q.kind === "cancelled" && q.event?.id).toBe(`stepwise-cancelled-${queued.runId}`);
      expect(q.kind === "cancelled" && JSON.parse(q.event!.dataJson)).toMatchObject({
        run_id: queued.runId,
        function_id: "fn",
        reason: "not needed",
        event: { id: queued.event.id, name: queued.event.name, data: JSON.parse(queued.event.dataJson) },
      });
      expect(await store.cancelRun(queued.runId, "again")).toEqual({ kind: "ended", status: "CANCELLED" });
      expect((await store.outboxEvents(-60_000, 100)).filter((e) => e.id.endsWith(queued.runId))).toHaveLength(1);

      const executorId = uniq("exec");
      const running = await claimed(executorId);
      const r = await store.cancelRun(running.runId, "stop");
      expect(r).toMatchObject({ kind: "cancelled", was: "RUNNING", executorId, lease: running.lease });
      // The execution that held it can no longer write: the journal refuses its step and its end.
      expect(await store.journalStep(stepRecord(running.runId, running.lease, "late:0"))).toEqual({ kind: "lease-lost" });
      expect(await store.completeRun(running.runId, running.lease, "1")).toBeNull();
      expect(await store.claimRun(running.runId, uniq("exec"), 60_000)).toBeNull();
      const view = await mustGet(running.runId);
      expect(view).toMatchObject({ status: "CANCELLED", error: { name: "RunCancelled", message: "stop", nonRetriable: true } });
      expect(view.steps).toEqual([]);

      const done = await claimed(uniq("exec"));
      await store.completeRun(done.runId, done.lease, "1");
      expect(await store.cancelRun(done.runId, "late")).toEqual({ kind: "ended", status: "COMPLETED" });
      expect(await store.cancelRun("00000000-0000-4000-8000-000000000000", "x")).toEqual({ kind: "unknown" });

      const outbox = await store.outboxEvents(-60_000, 1000);
      await store.deleteOutboxEvents(outbox.map((e) => e.id));
      expect(await store.outboxEvents(-60_000, 1000)).toEqual([]);
    });

    it("failRun needs the current lease and stores the error", async () => {
      const run = await claimed(uniq("exec"));
      const stepError: StoredError = { name: "TypeError", message: "x is undefined" };
      expect(
        await store.journalStep(stepRecord(run.runId, run.lease, "boom:0", { outputJson: undefined, error: stepError })),
      ).toEqual({ kind: "journaled" });
      const error: StoredError = {
        name: "NonRetriableError",
        message: "order invalid",
        nonRetriable: true,
        cause: { name: "ZodError", message: "total: expected number", cause: { name: "Error", message: "root" } },
      };
      expect((await store.failRun(run.runId, run.lease - 1, error)).ok).toBe(false);
      expect((await mustGet(run.runId)).status).toBe("RUNNING");
      expect(await store.failRun(run.runId, run.lease, error)).toEqual({ ok: true, failureRun: undefined, wokenRuns: [] });
      expect((await store.failRun(run.runId, run.lease, error)).ok).toBe(false);
      expect(await store.completeRun(run.runId, run.lease, "1")).toBeNull();

      const view = await mustGet(run.runId);
      expect(view).toMatchObject({ status: "FAILED", error, hasOutput: false, output: null, lease: run.lease });
      expect(view.endedAt).toBeInstanceOf(Date);
      expect(view.steps).toHaveLength(1);
      expect(view.steps[0]).toMatchObject({ key: "boom:0", hasOutput: false, output: null, error: stepError });
    });

    it("requeueRun hands a held run back to the queue, fencing its old lease", async () => {
      const run = await claimed(uniq("exec"));
      expect(await store.journalStep(stepRecord(run.runId, run.lease, "a:0"))).toEqual({ kind: "journaled" });
      expect(await store.requeueRun(run.runId, run.lease - 1, 60_000)).toBe(false);
      expect((await mustGet(run.runId)).status).toBe("RUNNING");

      expect(await store.requeueRun(run.runId, run.lease, 60_000)).toBe(true);
      expect(await store.requeueRun(run.runId, run.lease, 60_000)).toBe(false);
      expect((await mustGet(run.runId)).status).toBe("QUEUED");
      // Redelivery of its event hands it out again, and the old lease can do nothing more.
      expect(ids(await store.recordEvent(run.event))).toEqual([run.runId]);
      expect(await store.journalStep(stepRecord(run.runId, run.lease, "b:0"))).toEqual({ kind: "lease-lost" });
      expect(await store.completeRun(run.runId, run.lease, "1")).toBeNull();

      const again = await store.claimRun(run.runId, uniq("exec"), 60_000);
      expect(again?.lease).toBe(run.lease + 1);
      expect(again!.journal.map((e) => e.stepKey)).toEqual(["a:0"]);
    });

    it("renewLeases extends only the named RUNNING runs of that executor", async () => {
      const mine = uniq("exec");
      const theirs = uniq("exec");
      const a = await claimed(mine, 80);
      const b = await claimed(mine, 80);
      const dropped = await claimed(mine, 80);
      const c = await claimed(theirs, 80);
      const done = await claimed(mine, 80);
      expect(await store.completeRun(done.runId, done.lease, "1")).not.toBeNull();

      // `dropped` is no longer held by the executor: not named, not renewed.
      expect(await store.renewLeases(mine, [a.runId, b.runId, c.runId, done.runId], 60_000)).toBe(2);
      await sleep(150);
      expect(await store.claimRun(a.runId, uniq("exec"), 60_000)).toBeNull();
      expect(await store.claimRun(b.runId, uniq("exec"), 60_000)).toBeNull();
      expect((await store.claimRun(c.runId, uniq("exec"), 60_000))?.lease).toBe(2);
      expect((await store.claimRun(dropped.runId, uniq("exec"), 60_000))?.lease).toBe(2);
      expect(await store.renewLeases(uniq("exec"), [a.runId], 60_000)).toBe(0);
    });

    it("reclaimStale returns expired RUNNING runs and overdue QUEUED runs once, as QUEUED", async () => {
      await settleSweep();
      const overdue = await requeuedRun(1);
      const notYetDue = await requeuedRun(60_000);
      // Work confirmed on the bus (a new run, or a requeue followed by markPublished): left until the backstop.
      const waiting = await queuedRun();
      const confirmed = await requeuedRun(1);
      await store.markPublished([{ runId: confirmed.runId, lease: confirmed.lease }]);
      const expired = await claimed(uniq("exec"), 1);
      const held = await claimed(uniq("exec"), 60_000);
      const finished = await claimed(uniq("exec"), 1);
      expect(await store.completeRun(finished.runId, finished.lease, "1")).not.toBeNull();
      const failed = await claimed(uniq("exec"), 1);
      expect((await store.failRun(failed.runId, failed.lease, { name: "Error", message: "x" })).ok).toBe(true);
      await sleep(30);

      const swept = await store.reclaimStale(100, 60_000);
      expect(ids(swept)).toEqual(ids([overdue, expired]));
      expect(swept.find((r) => r.runId === expired.runId)).toEqual({
        runId: expired.runId,
        appId: expired.appId,
        functionId: expired.functionId,
        lease: expired.lease,
      });
      expect(await store.reclaimStale(100, 60_000)).toEqual([]);

      expect((await mustGet(expired.runId)).status).toBe("QUEUED");
      expect((await mustGet(overdue.runId)).status).toBe("QUEUED");
      expect((await mustGet(held.runId)).status).toBe("RUNNING");
      expect((await mustGet(notYetDue.runId)).status).toBe("QUEUED");
      expect((await mustGet(waiting.runId)).status).toBe("QUEUED");
      expect((await mustGet(confirmed.runId)).status).toBe("QUEUED");
      // The executor that let its lease lapse is fenced off; the next claim bumps the lease.
      expect(await store.completeRun(expired.runId, expired.lease, "1")).toBeNull();
      expect((await store.claimRun(expired.runId, uniq("exec"), 60_000))?.lease).toBe(expired.lease + 1);
    });

    it("markPublished confirms only the lease it names: a later hand-back keeps its short deadline", async () => {
      await settleSweep();
      const run = await requeuedRun(1);
      // Claimed again and handed back once more, then a stale confirmation of the first publish arrives.
      const again = await store.claimRun(run.runId, uniq("exec"), 60_000);
      expect(await store.requeueRun(run.runId, again!.lease, 1)).toBe(true);
      await store.markPublished([{ runId: run.runId, lease: run.lease }]);
      await sleep(20);
      expect(ids(await store.reclaimStale(100, 60_000))).toEqual([run.runId]);
    });

    if (backend.pooled) it("markPublished and renewLeases skip a run another transaction holds locked instead of waiting for it", async () => {
      await settleSweep();
      const busy = await requeuedRun(1);
      const free = await requeuedRun(1);
      const held = await claimed("exec-renew");
      const other = await claimed("exec-renew");
      let release!: () => void;
      const released = new Promise<void>((r) => (release = r));
      let locked!: () => void;
      const isLocked = new Promise<void>((r) => (locked = r));
      // Another statement (a claim, a completion) holding the rows.
      const holder = db.sql.transaction(async (tx) => {
        await tx.query("SELECT id FROM runs WHERE id = ANY($1::uuid[]) FOR UPDATE", [[busy.runId, held.runId]]);
        locked();
        await released;
      });
      await isLocked;
      const t0 = Date.now();
      await store.markPublished([
        { runId: busy.runId, lease: busy.lease },
        { runId: free.runId, lease: free.lease },
      ]);
      expect(await store.renewLeases("exec-renew", [held.runId, other.runId], 60_000)).toBe(1);
      expect(Date.now() - t0).toBeLessThan(500);
      release();
      await holder;
      // The skipped run kept its short deadline; the other one got the backstop.
      await sleep(20);
      expect(ids(await store.reclaimStale(100, 60_000))).toEqual([busy.runId]);
    });

    it("runs waiting in the queue are published once more after the backstop, in case the bus lost them", async () => {
      await settleSweep();
      const appId = uniq("app");
      const name = uniq("evt");
      await store.registerFunctions(appId, [{ id: "fn", name: "Fn", eventTriggers: [name], config: {} }]);
      const [waiting] = await store.recordEvent(eventInput(name), 50);
      expect(await store.reclaimStale(100, 60_000)).toEqual([]);
      await sleep(100);
      const swept = await store.reclaimStale(100, 60_000);
      expect(ids(swept)).toEqual([waiting!.runId]);
      await store.markPublished(swept, 50);
      expect(await store.reclaimStale(100, 60_000)).toEqual([]);
      await sleep(100);
      expect(ids(await store.reclaimStale(100, 60_000))).toEqual([waiting!.runId]);
    });

    it("reclaimStale sets a new deadline and honours its limit", async () => {
      await settleSweep();
      const runs = [await requeuedRun(1), await requeuedRun(1), await requeuedRun(1)];
      await sleep(30);
      const firstTwo = await store.reclaimStale(2, 80);
      expect(firstTwo).toHaveLength(2);
      const last = await store.reclaimStale(2, 80);
      expect(last).toHaveLength(1);
      expect(ids([...firstTwo, ...last])).toEqual(ids(runs));
      expect(await store.reclaimStale(10, 80)).toEqual([]);

      // Past the new deadline they are due again.
      await sleep(150);
      expect(ids(await store.reclaimStale(10, 600_000))).toEqual(ids(runs));
    });

    it("listRuns filters by function, status and event", async () => {
      const name = uniq("evt");
      const appId = uniq("app");
      const fnX = uniq("fn-x");
      const fnY = uniq("fn-y");
      await store.registerFunctions(appId, [
        { id: fnX, name: "X", eventTriggers: [name], config: {} },
        { id: fnY, name: "Y", eventTriggers: [name], config: {} },
      ]);
      const events = [eventInput(name), eventInput(name), eventInput(name)];
      const refs: RunRef[] = [];
      for (const ev of events) refs.push(...(await store.recordEvent(ev)));
      expect(refs).toHaveLength(6);

      const xRuns = refs.filter((r) => r.functionId === fnX);
      const claim = await store.claimRun(xRuns[0]!.runId, uniq("exec"), 60_000);
      expect(await store.completeRun(xRuns[0]!.runId, claim!.lease, "1")).not.toBeNull();
      await store.claimRun(xRuns[1]!.runId, uniq("exec"), 60_000);

      const byFunction = await store.listRuns({ functionId: fnX, limit: 100 });
      expect(ids(byFunction.map((r) => ({ runId: r.id })))).toEqual(ids(xRuns));
      expect(byFunction.every((r) => r.steps.length === 0)).toBe(true);

      const completed = await store.listRuns({ functionId: fnX, status: "COMPLETED", limit: 100 });
      expect(completed.map((r) => r.id)).toEqual([xRuns[0]!.runId]);
      expect(completed[0]!.hasOutput).toBe(true);
      const queued = await store.listRuns({ functionId: fnX, status: "QUEUED", limit: 100 });
      expect(queued.map((r) => r.id)).toEqual([xRuns[2]!.runId]);

      const byEvent = await store.listRuns({ eventId: events[1]!.id, limit: 100 });
      expect(byEvent.map((r) => r.functionId).sort()).toEqual([fnX, fnY].sort());
      expect(byEvent.every((r) => r.event.id === events[1]!.id)).toBe(true);
      const both = await store.listRuns({ eventId: events[0]!.id, functionId: fnY, status: "QUEUED", limit: 100 });
      expect(both.map((r) => r.id)).toEqual(refs.filter((r) => r.functionId === fnY).slice(0, 1).map((r) => r.runId));

      const anyCompleted = await store.listRuns({ status: "COMPLETED", limit: 1000 });
      expect(anyCompleted.some((r) => r.id === xRuns[0]!.runId)).toBe(true);
      expect(anyCompleted.every((r) => r.status === "COMPLETED")).toBe(true);
      expect(await store.listRuns({ functionId: uniq("no-such-fn"), limit: 100 })).toEqual([]);
    });

    it("listRuns pages newest first with a (createdAt, id) keyset", async () => {
      // Two apps share the function id, so each event creates two runs in one
      // transaction: equal created_at, ordered by id.
      const name = uniq("evt");
      const fn = uniq("fn-page");
      const appA = uniq("app");
      const appB = uniq("app");
      await store.registerFunctions(appA, [{ id: fn, name: "P", eventTriggers: [name], config: {} }]);
      await store.registerFunctions(appB, [{ id: fn, name: "P", eventTriggers: [name], config: {} }]);
      const perEvent: string[][] = [];
      for (let i = 0; i < 3; i++) {
        perEvent.push(ids(await store.recordEvent(eventInput(name))));
        await sleep(5);
      }

      const all = await store.listRuns({ functionId: fn, limit: 100 });
      expect(all).toHaveLength(6);
      // Newest event first; within one event, id descending.
      expect(all.map((r) => r.id)).toEqual(perEvent.reverse().flatMap((pair) => [...pair].reverse()));

      for (const pageSize of [1, 2, 4]) {
        const paged: string[] = [];
        let before: { createdAt: Date; id: string } | undefined;
        for (let pages = 0; pages < 10; pages++) {
          const page = await store.listRuns({ functionId: fn, limit: pageSize, before });
          expect(page.length).toBeLessThanOrEqual(pageSize);
          paged.push(...page.map((r) => r.id));
          const last = page[page.length - 1];
          if (!last || page.length < pageSize) break;
          before = { createdAt: last.createdAt, id: last.id };
        }
        expect({ pageSize, ids: paged }).toEqual({ pageSize, ids: all.map((r) => r.id) });
      }
    });

    it("getRun of an unknown or malformed id returns null", async () => {
      expect(await store.getRun(randomUUID())).toBeNull();
      expect(await store.getRun("not-a-uuid")).toBeNull();
      expect(await store.getRun("")).toBeNull();
      expect(await store.getRun("'; DROP TABLE runs; --")).toBeNull();
      const ref = await queuedRun();
      expect(await store.getRun(ref.runId.toUpperCase())).toMatchObject({ id: ref.runId });
    });

    it("expireUnfinished makes every unfinished run reclaimable at once", async () => {
      await settleSweep();
      const queued = await queuedRun();
      const running = await claimed(uniq("exec"), 600_000);
      const stillRunning = await claimed(uniq("exec"), 600_000);
      const finished = await claimed(uniq("exec"), 600_000);
      expect(await store.completeRun(finished.runId, finished.lease, "1")).not.toBeNull();

      await store.expireUnfinished();
      // A run held by a previous process is claimable straight away...
      expect((await store.claimRun(running.runId, uniq("exec"), 600_000))?.lease).toBe(running.lease + 1);
      // ...and the sweep returns every other unfinished one, never a finished one.
      const swept = ids(await store.reclaimStale(10_000, 600_000));
      expect(swept).toContain(queued.runId);
      expect(swept).toContain(stillRunning.runId);
      expect(swept).not.toContain(running.runId);
      expect(swept).not.toContain(finished.runId);
      const unfinished = [
        ...(await store.listRuns({ status: "QUEUED", limit: 10_000 })),
        ...(await store.listRuns({ status: "RUNNING", limit: 10_000 })),
      ]
        .map((r) => r.id)
        .filter((id) => id !== running.runId);
      expect(swept).toEqual([...unfinished].sort());
      expect((await mustGet(stillRunning.runId)).status).toBe("QUEUED");
    });

    it("expireQueued makes QUEUED runs due for the sweep and leaves RUNNING ones to their leases", async () => {
      await settleSweep();
      const queued = await queuedRun();
      const running = await claimed(uniq("exec"), 600_000);
      expect(ids(await store.reclaimStale(10_000, 600_000))).not.toContain(queued.runId);
      expect(await store.expireQueued()).toBeGreaterThanOrEqual(1);
      const swept = ids(await store.reclaimStale(10_000, 600_000));
      expect(swept).toContain(queued.runId);
      expect(swept).not.toContain(running.runId);
      expect((await mustGet(running.runId)).status).toBe("RUNNING");
    });

    describe("conditional triggers", () => {
      it("recordEventMatching creates the runs of unconditional triggers and returns the conditional ones, with when the event was stored", async () => {
        const name = uniq("order.placed");
        const appId = uniq("app");
        await store.registerFunctions(appId, [
          { id: "always", name: "A", eventTriggers: [name], config: {} },
          {
            id: "big",
            name: "B",
            eventTriggers: [],
            conditionalTriggers: [
              { event: name, condition: "event.data.order.total > 100" },
              { event: name, condition: "event.data.vip == true" },
            ],
            config: {},
          },
          // A trigger of the name without a condition makes the others moot: every event starts a run.
          { id: "mixed", name: "M", eventTriggers: [name], conditionalTriggers: [{ event: name, condition: "false" }], config: {} },
          { id: "elsewhere", name: "E", eventTriggers: [], conditionalTriggers: [{ event: uniq("other"), condition: "true" }], config: {} },
        ]);
        const ev = eventInput(name);
        const before = Date.now();
        const recorded = await store.recordEventMatching(ev);
        const after = Date.now();
        expect(recorded.runs.map((r) => r.functionId).sort()).toEqual(["always", "mixed"]);
        expect(recorded.conditional).toEqual([
          { appId, functionId: "big", conditions: ["event.data.order.total > 100", "event.data.vip == true"] },
        ]);
        expect(recorded.storedAtMs).toBeGreaterThanOrEqual(before - 1000);
        expect(recorded.storedAtMs).toBeLessThanOrEqual(after + 1000);
        // The conditional trigger has no run until createRuns.
        expect((await store.listRuns({ eventId: ev.id, limit: 10 })).map((r) => r.functionId).sort()).toEqual(["always", "mixed"]);

        // A redelivery: the same stored time, the conditions to evaluate again, the runs still QUEUED.
        const again = await store.recordEventMatching(ev);
        expect(again.storedAtMs).toBe(recorded.storedAtMs);
        expect(ids(again.runs)).toEqual(ids(recorded.runs));
        expect(again.conditional).toEqual(recorded.conditional);

        // Registered again without its condition, the trigger starts a run for every event.
        await store.registerFunctions(appId, [{ id: "big", name: "B", eventTriggers: [name], config: {} }]);
        const plain = await store.recordEventMatching(eventInput(name));
        expect(plain.runs.map((r) => r.functionId).sort()).toEqual(["always", "big", "mixed"]);
        expect(plain.conditional).toEqual([]);
      });

      it("createRuns creates the runs whose conditions held, idempotently", async () => {
        const name = uniq("evt");
        const appId = uniq("app");
        const conditional = (id: string) => ({
          id,
          name: id,
          eventTriggers: [],
          conditionalTriggers: [{ event: name, condition: "true" }],
          config: {},
        });
        await store.registerFunctions(appId, [conditional("one"), conditional("two")]);
        const ev = eventInput(name);
        expect((await store.recordEventMatching(ev)).runs).toEqual([]);
        expect(await store.createRuns(ev.id, [])).toEqual([]);

        const first = await store.createRuns(ev.id, [{ appId, functionId: "one" }], 50);
        expect(first).toHaveLength(1);
        expect(first[0]).toMatchObject({ appId, functionId: "one", lease: 0 });
        // Again (a redelivered event evaluated once more): the same run, still QUEUED.
        expect(await store.createRuns(ev.id, [{ appId, functionId: "one" }])).toEqual(first);
        const both = await store.createRuns(ev.id, [
          { appId, functionId: "one" },
          { appId, functionId: "two" },
        ]);
        expect(both.map((r) => r.functionId).sort()).toEqual(["one", "two"]);
        expect(both.find((r) => r.functionId === "one")).toEqual(first[0]);
        // A redelivery of the event hands out the QUEUED runs, conditional ones included.
        expect(ids((await store.recordEventMatching(ev)).runs)).toEqual(ids(both));

        const claim = await store.claimRun(first[0]!.runId, uniq("exec"), 60_000);
        expect(claim?.event.id).toBe(ev.id);
        expect((await store.createRuns(ev.id, [{ appId, functionId: "one" }])).map((r) => r.runId)).toEqual([]);
        expect(await store.listRuns({ eventId: ev.id, limit: 10 })).toHaveLength(2);
      });
    });

    it("runsOfEvents reads the runs of several events in one query, and endedEvents names those whose runs all ended", async () => {
      const done = await claimed(uniq("exec"));
      expect(await store.completeRun(done.runId, done.lease, '{"ok":1}')).not.toBeNull();
      const running = await claimed(uniq("exec"));
      const views = await store.runsOfEvents([done.event.id, running.event.id, "no-such-event"]);
      expect(views.map((v) => [v.event.id, v.status]).sort()).toEqual(
        [
          [done.event.id, "COMPLETED"],
          [running.event.id, "RUNNING"],
        ].sort(),
      );
      expect(views.find((v) => v.id === done.runId)?.output).toEqual({ ok: 1 });
      expect(await store.runsOfEvents([])).toEqual([]);
      expect(await store.endedEvents([done.event.id, running.event.id, "no-such-event"])).toEqual([done.event.id]);
    });

    describe("retries and onFailure", () => {
      function attemptRecord(runId: string, lease: number, over: Partial<AttemptRecord> = {}): AttemptRecord {
        return {
          runId,
          lease,
          stepKey: "charge:0",
          stepId: "charge",
          attempt: 1,
          startedAtMs: T0 + 10,
          endedAtMs: T0 + 20,
          error: { name: "Error", message: "gateway down" },
          retryAtMs: T0 + 1_000,
          ...over,
        };
      }

      it("journalAttempt needs the lease; the first write of an attempt wins", async () => {
        const run = await claimed(uniq("exec"));
        expect(await store.journalAttempt(attemptRecord(run.runId, run.lease - 1))).toBe(false);
        expect(await store.journalAttempt(attemptRecord(randomUUID(), 1))).toBe(false);
        expect((await mustGet(run.runId)).failedAttempts).toEqual([]);

        expect(await store.journalAttempt(attemptRecord(run.runId, run.lease))).toBe(true);
        // The same attempt written again (a retried write) keeps the first.
        expect(
          await store.journalAttempt(attemptRecord(run.runId, run.lease, { error: { name: "Error", message: "other" }, retryAtMs: T0 + 9_000 })),
        ).toBe(true);
        const second: StoredError = { name: "RetryAfterError", message: "rate limited", cause: { name: "Error", message: "429" } };
        expect(
          await store.journalAttempt(attemptRecord(run.runId, run.lease, { attempt: 2, startedAtMs: T0 + 30, endedAtMs: T0 + 40, error: second, retryAtMs: T0 + 5_000 })),
        ).toBe(true);
        const handlerError: StoredError = { name: "TypeError", message: "x is undefined" };
        expect(
          await store.journalAttempt(
            attemptRecord(run.runId, run.lease, { stepKey: "", stepId: "", startedAtMs: T0, endedAtMs: T0 + 50, error: handlerError, retryAtMs: T0 + 2_000 }),
          ),
        ).toBe(true);

        const view = await mustGet(run.runId);
        expect(
          view.failedAttempts.map((a) => ({
            key: a.key,
            id: a.id,
            attempt: a.attempt,
            startedAt: a.startedAt?.getTime(),
            endedAt: a.endedAt?.getTime(),
            error: a.error,
            retryAt: a.retryAt.getTime(),
          })),
        ).toEqual([
          { key: "charge:0", id: "charge", attempt: 1, startedAt: T0 + 10, endedAt: T0 + 20, error: { name: "Error", message: "gateway down" }, retryAt: T0 + 1_000 },
          { key: "charge:0", id: "charge", attempt: 2, startedAt: T0 + 30, endedAt: T0 + 40, error: second, retryAt: T0 + 5_000 },
          { key: "", id: "", attempt: 1, startedAt: T0, endedAt: T0 + 50, error: handlerError, retryAt: T0 + 2_000 },
        ]);
        // A failed attempt is not a result: the step has none yet.
        expect(view.steps).toEqual([]);

        // Nothing is written for a finished run.
        expect(await store.completeRun(run.runId, run.lease, "1")).not.toBeNull();
        expect(await store.journalAttempt(attemptRecord(run.runId, run.lease, { attempt: 3 }))).toBe(false);
        expect((await mustGet(run.runId)).failedAttempts).toHaveLength(3);
      });

      it("claimRun returns the handler's attempt (its failures + 1) and the failed attempts of each step", async () => {
        const ref = await queuedRun();
        const first = await store.claimRun(ref.runId, uniq("exec"), 60_000);
        expect(first?.attempt).toBe(1);
        expect(first?.stepAttempts).toEqual({});
        expect(first?.wakes).toBe(0);
        const write = (over: Partial<AttemptRecord>) => store.journalAttempt(attemptRecord(ref.runId, first!.lease, over));
        for (const attempt of [1, 2, 3]) expect(await write({ stepKey: "charge:0", attempt, retryAtMs: T0 + attempt * 1_000 })).toBe(true);
        expect(await write({ stepKey: "ship:0", stepId: "ship", attempt: 1 })).toBe(true);
        expect(await write({ stepKey: "", stepId: "", attempt: 1 })).toBe(true);
        expect(await write({ stepKey: "", stepId: "", attempt: 2 })).toBe(true);
        expect(await store.requeueRun(ref.runId, first!.lease, 60_000)).toBe(true);

        const again = await store.claimRun(ref.runId, uniq("exec"), 60_000);
        expect(again?.attempt).toBe(3);
        expect(again?.stepAttempts).toEqual({ "charge:0": 3, "ship:0": 1 });
        // The retry time of each one's latest attempt.
        expect(again?.retryAtMs["charge:0"]).toBe(T0 + 3_000);
        expect(Object.keys(again?.retryAtMs ?? {}).sort()).toEqual(["", "charge:0", "ship:0"]);
        expect(again?.journal).toEqual([]);
      });

      it("failRun starts the onFailure handler's run, with a stepwise/run.failed event carrying the event and the error", async () => {
        await settleSweep();
        const appId = uniq("app");
        const name = uniq("evt");
        await store.registerFunctions(appId, [
          { id: "charge", name: "Charge", eventTriggers: [name], config: { onFailure: "charge-on-failure" } },
          { id: "charge-on-failure", name: "Charge (onFailure)", eventTriggers: [], config: {} },
        ]);
        const ev = eventInput(name);
        const [ref] = await store.recordEvent(ev);
        const claim = await store.claimRun(ref!.runId, uniq("exec"), 60_000);
        const error: StoredError = {
          name: "StepError",
          message: 'step "pay" failed: card declined',
          nonRetriable: true,
          cause: { name: "Error", message: "card declined" },
        };
        const failed = await store.failRun(ref!.runId, claim!.lease, error, 1);
        expect(failed.ok).toBe(true);
        expect(failed.failureRun).toMatchObject({ appId, functionId: "charge-on-failure", lease: 0 });
        const handlerRun = await mustGet(failed.failureRun!.runId);
        expect(handlerRun.status).toBe("QUEUED");
        expect(handlerRun.event.id).toBe(`stepwise-failed-${ref!.runId}`);
        expect(handlerRun.event.name).toBe("stepwise/run.failed");
        expect(handlerRun.event.data).toEqual({
          function_id: "charge",
          run_id: ref!.runId,
          error,
          event: { id: ev.id, name, data: JSON.parse(ev.dataJson), ts: new Date(T0).toISOString() },
        });
        expect(await mustGet(ref!.runId)).toMatchObject({ status: "FAILED", error });

        // Its publish is unconfirmed: after the short deadline the reconciler publishes it.
        await sleep(30);
        expect(ids(await store.reclaimStale(100, 600_000))).toEqual([failed.failureRun!.runId]);

        // The failed run cannot fail twice, so there is one handler run.
        expect(await store.failRun(ref!.runId, claim!.lease, error)).toEqual({ ok: false, failureRun: undefined, wokenRuns: [] });
        expect(await store.listRuns({ functionId: "charge-on-failure", eventId: handlerRun.event.id, limit: 10 })).toHaveLength(1);

        // The handler's own failure starts nothing more.
        const handlerClaim = await store.claimRun(failed.failureRun!.runId, uniq("exec"), 60_000);
        expect(handlerClaim?.event.name).toBe("stepwise/run.failed");
        expect(await store.failRun(failed.failureRun!.runId, handlerClaim!.lease, { name: "Error", message: "again" })).toEqual({
          ok: true,
          failureRun: undefined,
          wokenRuns: [],
        });
      });
    });
  });
}

for (const backend of backends) storeSuite(backend);
