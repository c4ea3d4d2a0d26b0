import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { testBackends, type TestBackend, type TestDatabase, uniq } from "../testing/test-database.js";
import { INVOKED_EVENT_NAME, type InvokeAwait, invokeEventId } from "./invocations.js";
import { JournalStore } from "./journal-store.js";
import { migrate } from "./migrations.js";
import { TimerStore } from "./timer-store.js";
import type { EventInput, StepView } from "./types.js";

// The SQL of step.invoke, run against real Postgres and against PGlite as
// the other store suites are: a suspension starts its child once, the
// child's end journals the parent's step and wakes it, the step's timeout
// gives up on the child, and a function that is not registered fails the
// step.

const backends = testBackends("inv");
const T0 = 1_700_000_000_123;
const HOUR = 3_600_000;
const REQUEUE_MS = 60_000;

function invokeSuite(backend: TestBackend): void {
  describe(`invocations on ${backend.name}`, () => {
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

    /** An app with a parent function (its run claimed) and a child function. */
    async function claimedParent() {
      const appId = uniq("app");
      const name = uniq("evt");
      await store.registerFunctions(appId, [
        { id: "parent", name: "Parent", eventTriggers: [name], config: {} },
        { id: "child", name: "Child", eventTriggers: [uniq("never")], config: {} },
      ]);
      const event: EventInput = { id: uniq("ev"), name, dataJson: "{}", tsMs: T0, receivedAtMs: T0 };
      const [ref] = await store.recordEvent(event);
      const claim = await store.claimRun(ref!.runId, uniq("exec"), 60_000);
      expect(claim).not.toBeNull();
      return { appId, runId: ref!.runId, lease: claim!.lease, wakes: claim!.wakes };
    }

    function invoke(appId: string, stepKey = "sub:0", over: Partial<InvokeAwait> = {}): InvokeAwait {
      return {
        stepKey,
        stepId: stepKey.split(":")[0] ?? stepKey,
        kind: "invoke",
        dueAtMs: Date.now() + HOUR,
        appId,
        functionId: "child",
        dataJson: '{"n":1}',
        ...over,
      };
    }

    /** Starts the invocation and suspends on it, as the executor does; returns the child created. */
    async function suspendOn(parent: Awaited<ReturnType<typeof claimedParent>>, a: InvokeAwait) {
      const started = await store.startInvocations(parent.runId, parent.lease, [a], REQUEUE_MS);
      expect(started.kind).toBe("started");
      const outcome = await timers.suspend(parent.runId, parent.lease, parent.wakes, [a], REQUEUE_MS);
      return { children: started.kind === "started" ? started.runs : [], outcome };
    }

    async function status(runId: string): Promise<string> {
      return (await store.getRun(runId))!.status;
    }

    async function step(runId: string, key: string): Promise<StepView | undefined> {
      return (await store.getRun(runId))!.steps.find((s) => s.key === key);
    }

    async function timerKinds(runId: string): Promise<string[]> {
      const rows = await db.sql.query<{ kind: string }>("SELECT kind FROM timers WHERE run_id = $1", [runId]);
      return rows.map((r) => r.kind);
    }

    it("a suspension creates its child once: the invoked event with the data, the run QUEUED, linked to the step", async () => {
      const parent = await claimedParent();
      const { children, outcome } = await suspendOn(parent, invoke(parent.appId));
      expect(outcome).toEqual({ kind: "waiting", hasWaits: false });
      expect(children).toHaveLength(1);
      const child = await store.getRun(children[0]!.runId);
      expect(child).toMatchObject({ appId: parent.appId, functionId: "child", status: "QUEUED" });
      expect(child!.event).toMatchObject({ id: invokeEventId(parent.runId, "sub:0"), name: INVOKED_EVENT_NAME, data: { n: 1 } });
      expect(child!.event.id).toMatch(new RegExp(`^stepwise-invoke-${parent.runId}-[0-9a-f]{16}$`));
      expect(await timerKinds(parent.runId)).toEqual(["invoke"]);
      const links = await db.sql.query("SELECT parent_run_id, step_key, step_id FROM invocations WHERE child_run_id = $1", [child!.id]);
      expect(links).toEqual([{ parent_run_id: parent.runId, step_key: "sub:0", step_id: "sub" }]);

      // A later execution (woken by something else) suspends on the same step again: the same child, nothing new.
      const woken = await db.sql.query<{ lease: number }>(
        "UPDATE runs SET status = 'RUNNING', lease = lease + 1 WHERE id = $1 RETURNING lease",
        [parent.runId],
      );
      const second = await store.startInvocations(parent.runId, Number(woken[0]!.lease), [invoke(parent.appId)], REQUEUE_MS);
      expect(second).toEqual({ kind: "started", runs: [] });
      const runs = await db.sql.query("SELECT id FROM runs WHERE app_id = $1 AND function_id = 'child'", [parent.appId]);
      expect(runs).toHaveLength(1);
    });

    it("refuses a stale lease and creates nothing", async () => {
      const parent = await claimedParent();
      expect(await store.startInvocations(parent.runId, parent.lease + 1, [invoke(parent.appId)], REQUEUE_MS)).toEqual({ kind: "lease-lost" });
      expect(await db.sql.query("SELECT id FROM runs WHERE app_id = $1 AND function_id = 'child'", [parent.appId])).toEqual([]);
    });

    it("a function never registered fails the step non-retriably at once, and the suspension resumes", async () => {
      const parent = await claimedParent();
      const { children, outcome } = await suspendOn(parent, invoke(parent.appId, "sub:0", { functionId: "nope" }));
      expect(children).toEqual([]);
      expect(outcome.kind).toBe("resumed");
      expect((await step(parent.runId, "sub:0"))?.error).toEqual({
        name: "FunctionNotFound",
        message: `step.invoke: function ${parent.appId}/nope is not registered`,
        nonRetriable: true,
      });
      expect(await timerKinds(parent.runId)).toEqual([]);
    });

    it("the child's completion journals its output as the parent's step, drops the timeout and wakes the parent", async () => {
      const parent = await claimedParent();
      const { children } = await suspendOn(parent, invoke(parent.appId));
      const claim = await store.claimRun(children[0]!.runId, uniq("exec"), 60_000);
      const done = await store.completeRun(children[0]!.runId, claim!.lease, '{"total":42}');
      expect(done?.wokenRuns).toEqual([{ runId: parent.runId, appId: parent.appId, functionId: "parent", lease: parent.lease }]);
      expect(await status(parent.runId)).toBe("QUEUED");
      expect((await step(parent.runId, "sub:0"))?.output).toEqual({ total: 42 });
      expect(await timerKinds(parent.runId)).toEqual([]);
      // The next execution gets it in its journal.
      const next = await store.claimRun(parent.runId, uniq("exec"), 60_000);
      expect(next?.journal).toEqual([{ stepKey: "sub:0", outputJson: '{"total": 42}' }]);
    });

    it("a run that was not invoked completes as before, waking nothing", async () => {
      const parent = await claimedParent();
      expect((await store.completeRun(parent.runId, parent.lease, "1"))?.wokenRuns).toEqual([]);
    });

    it("the child's failure journals a non-retriable InvokedRunFailed error with the child's error as its cause", async () => {
      const parent = await claimedParent();
      const { children } = await suspendOn(parent, invoke(parent.appId));
      const childId = children[0]!.runId;
      const claim = await store.claimRun(childId, uniq("exec"), 60_000);
      const failed = await store.failRun(childId, claim!.lease, { name: "Error", message: "boom" });
      expect(failed.wokenRuns.map((r) => r.runId)).toEqual([parent.runId]);
      expect((await step(parent.runId, "sub:0"))?.error).toEqual({
        name: "InvokedRunFailed",
        message: `run ${childId} of ${parent.appId}/child failed: boom`,
        cause: { name: "Error", message: "boom" },
        nonRetriable: true,
      });
    });

    it("a child that ends before the parent suspends: the suspension resumes at once", async () => {
      const parent = await claimedParent();
      const a = invoke(parent.appId);
      const started = await store.startInvocations(parent.runId, parent.lease, [a], REQUEUE_MS);
      const childId = started.kind === "started" ? started.runs[0]!.runId : "";
      const claim = await store.claimRun(childId, uniq("exec"), 60_000);
      // The parent is still RUNNING: it is not queued, but its wake count moves.
      expect((await store.completeRun(childId, claim!.lease, '"early"'))?.wokenRuns).toEqual([]);
      expect(await status(parent.runId)).toBe("RUNNING");
      const outcome = await timers.suspend(parent.runId, parent.lease, parent.wakes, [a], REQUEUE_MS);
      expect(outcome.kind).toBe("resumed");
      expect((await step(parent.runId, "sub:0"))?.output).toBe("early");
      // Its step is journaled: no timeout is left behind.
      expect(await timerKinds(parent.runId)).toEqual([]);
    });

    it("completeRuns wakes the parents of the children of a batch, each with its child", async () => {
      const p1 = await claimedParent();
      const p2 = await claimedParent();
      const c1 = (await suspendOn(p1, invoke(p1.appId))).children[0]!;
      const c2 = (await suspendOn(p2, invoke(p2.appId))).children[0]!;
      const other = await claimedParent();
      const k1 = await store.claimRun(c1.runId, uniq("exec"), 60_000);
      const k2 = await store.claimRun(c2.runId, uniq("exec"), 60_000);
      const done = await store.completeRuns([
        { runId: c1.runId, lease: k1!.lease, outputJson: "1" },
        { runId: other.runId, lease: other.lease, outputJson: "0" },
        { runId: c2.runId, lease: k2!.lease, outputJson: "2" },
      ]);
      expect(done.map((d) => d?.wokenRuns.map((r) => r.runId))).toEqual([[p1.runId], [], [p2.runId]]);
      expect((await step(p1.runId, "sub:0"))?.output).toBe(1);
      expect((await step(p2.runId, "sub:0"))?.output).toBe(2);
    });

    it("the step's timeout journals InvokeTimeout while the child keeps running; the child's end later wakes nothing", async () => {
      const parent = await claimedParent();
      const { children } = await suspendOn(parent, invoke(parent.appId, "sub:0", { dueAtMs: Date.now() - 1_000 }));
      const childId = children[0]!.runId;
      const fired = await timers.fireDue(500, REQUEUE_MS);
      expect(fired.map((r) => r.runId)).toContain(parent.runId);
      const timedOut = await step(parent.runId, "sub:0");
      expect(timedOut?.error).toMatchObject({ name: "InvokeTimeout", nonRetriable: true });
      expect(timedOut?.error?.message).toContain(`the invoked run ${childId} of ${parent.appId}/child did not end by the timeout`);
      expect(await status(childId)).toBe("QUEUED");
      const claim = await store.claimRun(childId, uniq("exec"), 60_000);
      expect((await store.completeRun(childId, claim!.lease, '"late"'))?.wokenRuns).toEqual([]);
      expect((await step(parent.runId, "sub:0"))?.error?.name).toBe("InvokeTimeout");
    });

    it("without a timeout the step gets no timer", async () => {
      const parent = await claimedParent();
      await suspendOn(parent, invoke(parent.appId, "sub:0", { dueAtMs: null }));
      expect(await timerKinds(parent.runId)).toEqual([]);
      expect(await status(parent.runId)).toBe("WAITING");
    });

    describe("cancel", () => {
      /** A parent suspended on a child, itself suspended on a grandchild. */
      async function tree() {
        const parent = await claimedParent();
        const childId = (await suspendOn(parent, invoke(parent.appId))).children[0]!.runId;
        const claim = await store.claimRun(childId, uniq("exec"), 60_000);
        const child = { appId: parent.appId, runId: childId, lease: claim!.lease, wakes: claim!.wakes };
        const grandchildId = (await suspendOn(child, invoke(parent.appId, "deeper:0"))).children[0]!.runId;
        return { parent, childId, grandchildId };
      }

      it("cancelling a run cancels the runs it invoked, recursively, each with its event, and journals nothing in their parents", async () => {
        const { parent, childId, grandchildId } = await tree();
        const [outcome] = await store.cancelRuns([parent.runId], "withdrawn");
        expect(outcome).toMatchObject({ kind: "cancelled", was: "WAITING", reason: "withdrawn" });
        const invoked = outcome?.kind === "cancelled" ? (outcome.invoked ?? []) : [];
        expect(invoked.map((i) => i.runId).sort()).toEqual([childId, grandchildId].sort());
        const byId = new Map(invoked.map((i) => [i.runId, i.outcome]));
        // Each with its function, which the run metrics count by.
        expect(byId.get(childId)).toMatchObject({
          appId: parent.appId,
          functionId: "child",
          was: "WAITING",
          reason: `run ${parent.runId}, which invoked it, was cancelled: withdrawn`,
        });
        expect(byId.get(grandchildId)).toMatchObject({
          appId: parent.appId,
          functionId: "child",
          was: "QUEUED",
          reason: `run ${childId}, which invoked it, was cancelled: withdrawn`,
        });
        expect(byId.get(grandchildId)?.event).toMatchObject({ id: `stepwise-cancelled-${grandchildId}`, name: "stepwise/run.cancelled" });
        expect(outcome?.kind === "cancelled" ? outcome.wokenRun : "?").toBeUndefined();
        for (const id of [childId, grandchildId]) {
          expect((await store.getRun(id))?.error).toEqual({
            name: "RunCancelled",
            message: expect.stringContaining("which invoked it, was cancelled: withdrawn") as unknown as string,
            nonRetriable: true,
          });
        }
        expect(await step(parent.runId, "sub:0")).toBeUndefined();
        expect(await step(childId, "deeper:0")).toBeUndefined();
        expect(await timerKinds(childId)).toEqual([]);
        const outbox = await db.sql.query<{ id: string }>("SELECT id FROM event_outbox WHERE id = ANY($1::text[])", [
          [parent.runId, childId, grandchildId].map((id) => `stepwise-cancelled-${id}`),
        ]);
        expect(outbox).toHaveLength(3);
      });

      it("a run that ended is not cancelled, and the runs it invoked are left alone", async () => {
        const parent = await claimedParent();
        const childId = (await suspendOn(parent, invoke(parent.appId))).children[0]!.runId;
        const claim = await store.claimRun(childId, uniq("exec"), 60_000);
        const child = { appId: parent.appId, runId: childId, lease: claim!.lease, wakes: claim!.wakes };
        const a = invoke(parent.appId, "fire:0", { dueAtMs: null });
        const started = await store.startInvocations(child.runId, child.lease, [a], REQUEUE_MS);
        const grandchildId = started.kind === "started" ? started.runs[0]!.runId : "";
        // The child completes without waiting for its own child.
        expect(await store.completeRun(childId, child.lease, "1")).not.toBeNull();
        const [outcome] = await store.cancelRuns([parent.runId], "withdrawn");
        expect(outcome?.kind === "cancelled" ? outcome.invoked : "?").toBeUndefined();
        expect(await status(grandchildId)).toBe("QUEUED");
      });

      it("a child cancelled on its own fails its parent's step with InvokedRunCancelled and wakes the parent", async () => {
        const parent = await claimedParent();
        const childId = (await suspendOn(parent, invoke(parent.appId))).children[0]!.runId;
        const [outcome] = await store.cancelRuns([childId], "not needed");
        expect(outcome?.kind === "cancelled" ? outcome.wokenRun : undefined).toEqual({
          runId: parent.runId,
          appId: parent.appId,
          functionId: "parent",
          lease: parent.lease,
        });
        expect(await status(parent.runId)).toBe("QUEUED");
        expect((await step(parent.runId, "sub:0"))?.error).toEqual({
          name: "InvokedRunCancelled",
          message: `run ${childId} of ${parent.appId}/child was cancelled: not needed`,
          cause: { name: "RunCancelled", message: "not needed", nonRetriable: true },
          nonRetriable: true,
        });
      });

      it("cancelling a parent and its child together journals nothing in the parent", async () => {
        const parent = await claimedParent();
        const childId = (await suspendOn(parent, invoke(parent.appId))).children[0]!.runId;
        const outcomes = await store.cancelRuns([childId, parent.runId], "both");
        expect(outcomes.map((o) => o.kind)).toEqual(["cancelled", "cancelled"]);
        expect(await step(parent.runId, "sub:0")).toBeUndefined();
      });

      it("cancelInvokedRuns cancels the runs a CANCELLED run invoked that a cancel missed, and nothing for a run not cancelled", async () => {
        const parent = await claimedParent();
        const childId = (await suspendOn(parent, invoke(parent.appId))).children[0]!.runId;
        expect(await store.cancelInvokedRuns(parent.runId)).toEqual([]);
        expect(await status(childId)).toBe("QUEUED");
        // As a cancel that read the invocations before the child was created leaves it.
        await db.sql.query(
          `UPDATE runs SET status = 'CANCELLED', ended_at = now(), error = '{"name":"RunCancelled","message":"late","nonRetriable":true}' WHERE id = $1`,
          [parent.runId],
        );
        const cancelled = await store.cancelInvokedRuns(parent.runId);
        expect(cancelled.map((c) => c.runId)).toEqual([childId]);
        expect(cancelled[0]?.outcome).toMatchObject({ kind: "cancelled", reason: `run ${parent.runId}, which invoked it, was cancelled: late` });
        expect(await status(childId)).toBe("CANCELLED");
        expect(await store.cancelInvokedRuns(parent.runId)).toEqual([]);
      });
    });

    it("a child that ends after its parent ended journals nothing in the parent", async () => {
      const parent = await claimedParent();
      const started = await store.startInvocations(parent.runId, parent.lease, [invoke(parent.appId)], REQUEUE_MS);
      expect(await store.completeRun(parent.runId, parent.lease, '"gone"')).not.toBeNull();
      const childId = started.kind === "started" ? started.runs[0]!.runId : "";
      const claim = await store.claimRun(childId, uniq("exec"), 60_000);
      expect((await store.completeRun(childId, claim!.lease, "1"))?.wokenRuns).toEqual([]);
      expect(await step(parent.runId, "sub:0")).toBeUndefined();
    });
  });
}

for (const backend of backends) invokeSuite(backend);
