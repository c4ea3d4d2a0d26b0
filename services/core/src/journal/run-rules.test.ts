import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { compileCondition } from "../conditions/cel-condition.js";
import { testBackends, type TestBackend, type TestDatabase, uniq } from "../testing/test-database.js";
import { JournalStore } from "./journal-store.js";
import { migrate } from "./migrations.js";
import type { CancelOnRule, EventInput, RunRules } from "./types.js";
import { type EventLookup, WaitStore } from "./wait-store.js";

// Timeouts and cancelOn in the journal, on Postgres and on PGlite: what a
// run is armed with when it is created (whatever statement creates it), how
// a deadline cancels it, and how an event finds the runs it cancels.

const pause = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function rule(event: string, condition: string | null, timeoutMs?: number): CancelOnRule {
  return {
    event,
    condition,
    equality: condition === null ? undefined : compileCondition(condition, ["event", "async"]).equality,
    timeoutMs,
  };
}

function rulesSuite(backend: TestBackend): void {
  describe(`run rules on ${backend.name}`, () => {
    let db: TestDatabase;
    let store: JournalStore;
    let waits: WaitStore;

    beforeAll(async () => {
      db = await backend.open();
      await migrate(db.sql, db.migrateOptions);
      store = new JournalStore(db.sql);
      waits = new WaitStore(db.sql);
    });

    afterAll(async () => {
      await db?.drop();
    });

    /** A function of a fresh app triggered by a fresh event name, with these rules. */
    async function fn(runRules: RunRules) {
      const appId = uniq("app");
      const trigger = uniq("start");
      await store.registerFunctions(appId, [{ id: "fn", name: "Fn", eventTriggers: [trigger], runRules, config: {} }]);
      return { appId, trigger };
    }

    function input(name: string, data: unknown, receivedAtMs = Date.now()): EventInput {
      return { id: uniq("ev"), name, dataJson: JSON.stringify(data), tsMs: receivedAtMs, receivedAtMs };
    }

    /** Stores an event (and creates its runs) as the scheduler does; returns the lookup it makes after. */
    async function record(ev: EventInput): Promise<{ runIds: string[]; lookup: EventLookup }> {
      const recorded = await store.recordEventMatching(ev);
      const runIds = recorded.runs.map((r) => r.runId);
      return {
        runIds,
        lookup: { event: ev, storedAtMs: recorded.storedAtMs, receivedAtMs: ev.receivedAtMs, newRunIds: runIds },
      };
    }

    async function deadlineOf(runId: string) {
      const rows = await db.sql.query<{ kind: string; finite: boolean }>(
        "SELECT kind, isfinite(due_at) AS finite FROM run_deadlines WHERE run_id = $1",
        [runId],
      );
      return rows[0];
    }

    async function cancelWaitsOf(runId: string): Promise<number> {
      const rows = await db.sql.query<{ n: number | string }>("SELECT count(*) AS n FROM cancel_waits WHERE run_id = $1", [runId]);
      return Number(rows[0]?.n);
    }

    it("a run still QUEUED at its start deadline is cancelled with a reason naming the timeout", async () => {
      const { trigger } = await fn({ startMs: 1, cancelOn: [] });
      const { runIds } = await record(input(trigger, {}));
      expect(await deadlineOf(runIds[0]!)).toEqual({ kind: "start", finite: true });
      await pause(20);
      const expired = (await store.expireDeadlines(100)).filter((e) => e.runId === runIds[0]);
      expect(expired).toHaveLength(1);
      expect(expired[0]!.outcome).toMatchObject({ was: "QUEUED", reason: "timeouts.start: not started within 1ms" });
      expect(expired[0]!.outcome.event?.name).toBe("stepwise/run.cancelled");
      const run = await store.getRun(runIds[0]!);
      expect(run?.status).toBe("CANCELLED");
      expect(run?.error).toMatchObject({ name: "RunCancelled", message: "timeouts.start: not started within 1ms" });
      expect(await deadlineOf(runIds[0]!)).toBeUndefined();
      // Nothing left to expire for it.
      expect((await store.expireDeadlines(100)).some((e) => e.runId === runIds[0])).toBe(false);
    });

    it("the first claim drops a start deadline, or turns it into the finish deadline", async () => {
      const startOnly = await fn({ startMs: 60_000, cancelOn: [] });
      const a = (await record(input(startOnly.trigger, {}))).runIds[0]!;
      expect(await store.claimRun(a, "exec-1", 60_000)).not.toBeNull();
      expect(await deadlineOf(a)).toBeUndefined();

      const finishOnly = await fn({ finishMs: 1, cancelOn: [] });
      const b = (await record(input(finishOnly.trigger, {}))).runIds[0]!;
      // No start deadline: the row waits for the claim, due never.
      expect(await deadlineOf(b)).toEqual({ kind: "start", finite: false });
      await pause(10);
      expect((await store.expireDeadlines(100)).some((e) => e.runId === b)).toBe(false);
      const claim = await store.claimRun(b, "exec-1", 60_000);
      expect(claim).not.toBeNull();
      expect(await deadlineOf(b)).toEqual({ kind: "finish", finite: true });
      await pause(20);
      const expired = (await store.expireDeadlines(100)).filter((e) => e.runId === b);
      expect(expired[0]?.outcome).toMatchObject({
        was: "RUNNING",
        executorId: "exec-1",
        lease: claim!.lease,
        reason: "timeouts.finish: not finished within 1ms of its start",
      });
      // The execution that held it can no longer write.
      expect(await store.completeRun(b, claim!.lease, "1")).toBeNull();
    });

    it("a finish deadline of a run that ended goes without cancelling anything", async () => {
      const { trigger } = await fn({ finishMs: 1, cancelOn: [] });
      const runId = (await record(input(trigger, {}))).runIds[0]!;
      const claim = await store.claimRun(runId, "exec-1", 60_000);
      expect(await store.completeRun(runId, claim!.lease, '"done"')).not.toBeNull();
      await pause(20);
      expect((await store.expireDeadlines(100)).some((e) => e.runId === runId)).toBe(false);
      expect(await deadlineOf(runId)).toBeUndefined();
      expect((await store.getRun(runId))?.status).toBe("COMPLETED");
    });

    it("an event finds the runs whose cancelOn rule it may fire, by the indexed key", async () => {
      const stop = uniq("stop");
      const { trigger } = await fn({ cancelOn: [rule(stop, "event.data.user == async.data.user")] });
      const t0 = Date.now();
      const { runIds } = await record(input(trigger, { user: "ann" }, t0));
      const runId = runIds[0]!;
      expect(await cancelWaitsOf(runId)).toBe(1);
      const other = await record(input(stop, { user: "bob" }, t0 + 10));
      expect((await waits.matchesMany([other.lookup]))[0]!.cancels).toEqual([]);
      const match = await record(input(stop, { user: "ann" }, t0 + 20));
      const [found] = await waits.matchesMany([match.lookup]);
      expect(found!.cancels).toHaveLength(1);
      expect(found!.cancels[0]).toMatchObject({ runId, condition: "event.data.user == async.data.user" });
      expect(JSON.parse(found!.cancels[0]!.runEvent.dataJson)).toEqual({ user: "ann" });
      expect(found!.cancels[0]!.event.id).toBe(match.lookup.event.id);
      // An event received before the run's own is not in its window.
      const early = await record(input(stop, { user: "ann" }, t0 - 1_000));
      expect((await waits.matchesMany([early.lookup]))[0]!.cancels).toEqual([]);
    });

    it("an event limited to one app fires only the cancelOn rules of that app's runs, when it comes and when looked back for", async () => {
      const stop = uniq("stop");
      const a = await fn({ cancelOn: [rule(stop, null)] });
      const b = await fn({ cancelOn: [rule(stop, null)] });
      const t0 = Date.now();
      const runA = (await record(input(a.trigger, {}, t0))).runIds[0]!;
      const runB = (await record(input(b.trigger, {}, t0))).runIds[0]!;
      const limited = await record({ ...input(stop, {}, t0 + 5), appId: a.appId });
      expect((await waits.matchesMany([limited.lookup]))[0]!.cancels.map((c) => c.runId)).toEqual([runA]);
      const open = await record(input(stop, {}, t0 + 6));
      expect((await waits.matchesMany([open.lookup]))[0]!.cancels.map((c) => c.runId).sort()).toEqual([runA, runB].sort());

      // Stored before the runs' rules were: the runs' own lookups look back for it.
      const early = uniq("stop");
      const a2 = await fn({ cancelOn: [rule(early, null)] });
      const b2 = await fn({ cancelOn: [rule(early, null)] });
      const t1 = Date.now();
      await record({ ...input(early, {}, t1 + 5), appId: a2.appId });
      const startA = await record(input(a2.trigger, {}, t1));
      const startB = await record(input(b2.trigger, {}, t1));
      expect((await waits.matchesMany([startA.lookup]))[0]!.cancels.map((c) => c.runId)).toEqual(startA.runIds);
      expect((await waits.matchesMany([startB.lookup]))[0]!.cancels).toEqual([]);
    });

    it("a rule without a condition matches every event of its name; a rule's timeout closes its window", async () => {
      const stop = uniq("stop");
      const late = uniq("late");
      const { trigger } = await fn({ cancelOn: [rule(stop, null), rule(late, null, 1_000)] });
      const t0 = Date.now();
      const runId = (await record(input(trigger, {}, t0))).runIds[0]!;
      const any = await record(input(stop, { whatever: 1 }, t0 + 5));
      expect((await waits.matchesMany([any.lookup]))[0]!.cancels.map((c) => c.runId)).toEqual([runId]);
      const inTime = await record(input(late, {}, t0 + 500));
      expect((await waits.matchesMany([inTime.lookup]))[0]!.cancels.map((c) => c.runId)).toEqual([runId]);
      const tooLate = await record(input(late, {}, t0 + 5_000));
      expect((await waits.matchesMany([tooLate.lookup]))[0]!.cancels).toEqual([]);
    });

    it("a run looks back at the cancelling events stored before its rules were", async () => {
      const stop = uniq("stop");
      const { trigger } = await fn({ cancelOn: [rule(stop, "event.data.user == async.data.user")] });
      const t0 = Date.now();
      const runEvent = input(trigger, { user: "cy" }, t0);
      // The cancelling event is sent after the run's event but stored first.
      const cancelling = await record(input(stop, { user: "cy" }, t0 + 3));
      await record(input(stop, { user: "dee" }, t0 + 4));
      expect((await waits.matchesMany([cancelling.lookup]))[0]!.cancels).toEqual([]);
      const { runIds, lookup } = await record(runEvent);
      const [found] = await waits.matchesMany([lookup]);
      expect(found!.cancels.map((c) => [c.runId, c.event.id])).toEqual([[runIds[0], cancelling.lookup.event.id]]);
      // The same for runs made elsewhere.
      expect((await waits.cancelLookback(runIds)).map((c) => c.event.id)).toEqual([cancelling.lookup.event.id]);
    });

    it("a run's cancel waits go when it ends, and runs made by a rerun are armed too", async () => {
      const stop = uniq("stop");
      const { trigger } = await fn({ startMs: 3_600_000, cancelOn: [rule(stop, null)] });
      const runId = (await record(input(trigger, {}))).runIds[0]!;
      const claim = await store.claimRun(runId, "exec-1", 60_000);
      expect(await store.completeRun(runId, claim!.lease, "1")).not.toBeNull();
      expect(await cancelWaitsOf(runId)).toBe(0);
      const rerun = await store.deriveRun(runId, undefined, 60_000);
      expect(rerun.kind).toBe("created");
      const newId = rerun.kind === "created" ? rerun.run.runId : "";
      expect(await cancelWaitsOf(newId)).toBe(1);
      expect(await deadlineOf(newId)).toEqual({ kind: "start", finite: true });
      // A cancel takes its cancel waits and deadline with it, with its own reason.
      const [outcome] = await store.cancelRuns([newId], ["because"]);
      expect(outcome).toMatchObject({ kind: "cancelled", reason: "because" });
      expect(await cancelWaitsOf(newId)).toBe(0);
      expect(await deadlineOf(newId)).toBeUndefined();
    });

    it("registering a function again without rules arms its new runs with none", async () => {
      const stop = uniq("stop");
      const { appId, trigger } = await fn({ startMs: 1_000, cancelOn: [rule(stop, null)] });
      await store.registerFunctions(appId, [{ id: "fn", name: "Fn", eventTriggers: [trigger], config: {} }]);
      const runId = (await record(input(trigger, {}))).runIds[0]!;
      expect(await cancelWaitsOf(runId)).toBe(0);
      expect(await deadlineOf(runId)).toBeUndefined();
    });
  });
}

for (const backend of testBackends("rr")) rulesSuite(backend);
