import { randomBytes, randomUUID } from "node:crypto";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { JournalStore } from "./journal-store.js";
import type { EventInput, PublishedRunRef, RunView } from "./types.js";
import { testBackends, type TestBackend, type TestDatabase, uniq } from "../testing/test-database.js";
import { migrate } from "./migrations.js";
import { type AwaitRecord, type DueCron, TimerStore } from "./timer-store.js";
import { WaitStore } from "./wait-store.js";

// One conformance suite, run against real Postgres and against PGlite, as
// journal-store.test.ts: suspended runs, timers and cron ticks must behave
// the same under `stepwise dev` and in a deployment.

const backends = testBackends("ts");

const T0 = 1_700_000_000_123;
const MINUTE = 60_000;
const HOUR = 3_600_000;
const REQUEUE_MS = 60_000;


function ids(refs: readonly { runId: string }[]): string[] {
  return refs.map((r) => r.runId).sort();
}

/** Whole seconds, set before each test: times derived from it compare exactly with what the database stores. */
let base = 0;
beforeEach(() => {
  base = Math.floor(Date.now() / 1000) * 1000;
});

/** A time relative to the test's start. */
function at(offsetMs: number): number {
  return base + offsetMs;
}

function sleepAwait(stepKey: string, dueAtMs: number): AwaitRecord {
  return { stepKey, stepId: stepKey.split(":")[0] ?? stepKey, kind: "sleep", dueAtMs };
}

function retryAwait(stepKey: string, dueAtMs: number): AwaitRecord {
  return { stepKey, stepId: stepKey.split(":")[0] ?? stepKey, kind: "retry", dueAtMs };
}

function waitAwait(stepKey: string, dueAtMs: number, event: string, condition: string | null = null): AwaitRecord {
  return { stepKey, stepId: stepKey.split(":")[0] ?? stepKey, kind: "wait", dueAtMs, event, condition, equality: undefined };
}

function timerSuite(backend: TestBackend): void {
  describe(`TimerStore on ${backend.name}`, () => {
    let db: TestDatabase;
    let store: JournalStore;
    let timers: TimerStore;
    let waits: WaitStore;
    const extra: TestDatabase[] = [];

    beforeAll(async () => {
      db = await backend.open();
      await migrate(db.sql, db.migrateOptions);
      store = new JournalStore(db.sql);
      timers = new TimerStore(db.sql);
      waits = new WaitStore(db.sql);
    });

    afterAll(async () => {
      for (const d of extra) await d.drop();
      await db?.drop();
    });

    /** A run of a fresh function, claimed by an executor. */
    async function claimedRun(data: unknown = { orderId: "o-1" }) {
      const appId = uniq("app");
      const name = uniq("evt");
      await store.registerFunctions(appId, [{ id: "fn", name: "Fn", eventTriggers: [name], config: {} }]);
      const event: EventInput = { id: uniq("ev"), name, dataJson: JSON.stringify(data), tsMs: T0, receivedAtMs: T0 };
      const [ref] = await store.recordEvent(event);
      expect(ref).toBeDefined();
      const claim = await store.claimRun(ref!.runId, uniq("exec"), 60_000);
      expect(claim).not.toBeNull();
      return { runId: ref!.runId, appId, functionId: "fn", lease: claim!.lease, wakes: claim!.wakes, event };
    }

    /** A run suspended on the given awaits. */
    async function waitingRun(awaits: AwaitRecord[]) {
      const run = await claimedRun();
      expect(await timers.suspend(run.runId, run.lease, run.wakes, awaits, REQUEUE_MS)).toEqual({
        kind: "waiting",
        hasWaits: awaits.some((a) => a.kind === "wait"),
      });
      return run;
    }

    /** Claims a QUEUED run again, as the next execution does. */
    async function reclaim(runId: string) {
      const claim = await store.claimRun(runId, uniq("exec"), 60_000);
      expect(claim).not.toBeNull();
      return claim!;
    }

    async function timersOf(runId: string) {
      const rows = await db.sql.query<{ step_key: string; step_id: string; kind: string; due_ms: number | string }>(
        `SELECT step_key, step_id, kind, (extract(epoch FROM due_at) * 1000)::float8 AS due_ms
         FROM timers WHERE run_id = $1 ORDER BY step_key`,
        [runId],
      );
      return rows.map((r) => ({ stepKey: r.step_key, stepId: r.step_id, kind: r.kind, dueAtMs: Math.round(Number(r.due_ms)) }));
    }

    async function waitKeys(runId: string): Promise<string[]> {
      const rows = await db.sql.query<{ step_key: string }>("SELECT step_key FROM waits WHERE run_id = $1 ORDER BY step_key", [runId]);
      return rows.map((r) => r.step_key);
    }

    async function runRow(runId: string) {
      const rows = await db.sql.query<{
        status: string;
        lease: number;
        wakes: number;
        executor_id: string | null;
        expires_ms: number | string | null;
      }>(
        `SELECT status, lease, wakes, executor_id, (extract(epoch FROM lease_expires_at) * 1000)::float8 AS expires_ms
         FROM runs WHERE id = $1`,
        [runId],
      );
      const r = rows[0];
      expect(r).toBeDefined();
      return {
        status: r!.status,
        lease: Number(r!.lease),
        wakes: Number(r!.wakes),
        executorId: r!.executor_id,
        expiresMs: r!.expires_ms === null ? null : Number(r!.expires_ms),
      };
    }

    async function mustGet(runId: string): Promise<RunView> {
      const run = await store.getRun(runId);
      expect(run).not.toBeNull();
      return run!;
    }

    /** Fires every timer earlier tests left due, so a test sees only its own. */
    async function settleTimers(): Promise<void> {
      let fired: PublishedRunRef[];
      do fired = await timers.fireDue(1000, REQUEUE_MS);
      while (fired.length > 0);
    }

    /** Moves every schedule earlier tests left due far into the future. */
    async function settleCrons(): Promise<void> {
      let fired: PublishedRunRef[];
      do fired = await timers.fireCron(1000, REQUEUE_MS, () => new Date(Date.now() + 24 * HOUR));
      while (fired.length > 0);
    }

    describe("suspend", () => {
      it("records each await and leaves the run WAITING, held by no executor", async () => {
        const run = await claimedRun();
        const ship = uniq("shipment.created");
        const awaits: AwaitRecord[] = [
          sleepAwait("nap:0", at(HOUR)),
          retryAwait("charge:0", at(2 * HOUR)),
          waitAwait("ship:0", at(3 * HOUR), ship, "async.data.carrier == 'ups'"),
        ];
        expect(await timers.suspend(run.runId, run.lease, run.wakes, awaits, REQUEUE_MS)).toEqual({ kind: "waiting", hasWaits: true });

        expect(await runRow(run.runId)).toEqual({ status: "WAITING", lease: run.lease, wakes: 0, executorId: null, expiresMs: null });
        expect((await mustGet(run.runId)).status).toBe("WAITING");
        expect(await timersOf(run.runId)).toEqual([
          { stepKey: "charge:0", stepId: "charge", kind: "retry", dueAtMs: at(2 * HOUR) },
          { stepKey: "nap:0", stepId: "nap", kind: "sleep", dueAtMs: at(HOUR) },
          { stepKey: "ship:0", stepId: "ship", kind: "wait", dueAtMs: at(3 * HOUR) },
        ]);
        const waitRows = await db.sql.query("SELECT step_key, step_id, event_name, key_path, condition FROM waits WHERE run_id = $1", [
          run.runId,
        ]);
        expect(waitRows).toEqual([
          { step_key: "ship:0", step_id: "ship", event_name: ship, key_path: "", condition: "async.data.carrier == 'ups'" },
        ]);

        // Held by nobody: neither claimable nor writable with the old lease.
        expect(await store.claimRun(run.runId, uniq("exec"), 60_000)).toBeNull();
        expect(await store.completeRun(run.runId, run.lease, "1")).toBeNull();
      });

      it("says when no await is an event, so no lookback is needed", async () => {
        const run = await claimedRun();
        expect(await timers.suspend(run.runId, run.lease, run.wakes, [sleepAwait("a:0", at(HOUR))], REQUEUE_MS)).toEqual({
          kind: "waiting",
          hasWaits: false,
        });
      });

      it("a replayed suspension keeps each await's original due time; awaits not repeated are dropped", async () => {
        const name = uniq("evt");
        const run = await waitingRun([
          sleepAwait("long:0", at(HOUR)),
          sleepAwait("gone:0", at(HOUR)),
          waitAwait("wait:0", at(2 * HOUR), name),
          waitAwait("dropped:0", at(2 * HOUR), name),
          retryAwait("step:0", at(-1000)),
        ]);
        await settleTimers();
        expect((await runRow(run.runId)).status).toBe("QUEUED");
        const claim = await reclaim(run.runId);

        // The next execution replays to the same sleep and wait, with times computed anew.
        const again = [sleepAwait("long:0", at(5 * HOUR)), waitAwait("wait:0", at(9 * HOUR), name)];
        expect(await timers.suspend(run.runId, claim.lease, claim.wakes, again, REQUEUE_MS)).toEqual({ kind: "waiting", hasWaits: true });
        expect(await timersOf(run.runId)).toEqual([
          { stepKey: "long:0", stepId: "long", kind: "sleep", dueAtMs: at(HOUR) },
          { stepKey: "wait:0", stepId: "wait", kind: "wait", dueAtMs: at(2 * HOUR) },
        ]);
        expect(await waitKeys(run.runId)).toEqual(["wait:0"]);
      });

      it("resumes at once when an awaited step is already journaled", async () => {
        const run = await claimedRun();
        expect(
          await store.journalStep({
            runId: run.runId,
            lease: run.lease,
            stepKey: "nap:0",
            stepId: "nap",
            attempt: 1,
            startedAtMs: T0,
            endedAtMs: T0,
            outputJson: "null",
          }),
        ).toEqual({ kind: "journaled" });
        const before = Date.now();
        const outcome = await timers.suspend(
          run.runId,
          run.lease,
          run.wakes,
          [sleepAwait("nap:0", at(HOUR)), sleepAwait("other:0", at(HOUR))],
          REQUEUE_MS,
        );
        expect(outcome).toEqual({
          kind: "resumed",
          run: { runId: run.runId, appId: run.appId, functionId: run.functionId, lease: run.lease },
        });
        const row = await runRow(run.runId);
        expect(row).toMatchObject({ status: "QUEUED", executorId: null, lease: run.lease });
        // The short deadline: the reconciler publishes it again unless markPublished confirms.
        expect(row.expiresMs).toBeGreaterThanOrEqual(before + REQUEUE_MS - 1000);
        expect(row.expiresMs).toBeLessThanOrEqual(Date.now() + REQUEUE_MS + 1000);
        expect((await reclaim(run.runId)).lease).toBe(run.lease + 1);
      });

      it("resumes at once when a wake-up raced with it (the wake count moved)", async () => {
        const name = uniq("evt");
        const run = await waitingRun([retryAwait("r:0", at(-1000)), waitAwait("w:0", at(HOUR), name)]);
        await settleTimers();
        const claim = await reclaim(run.runId);
        expect(claim.wakes).toBe(1);

        // While this execution runs, the wait is resolved: the run is woken, not queued a second time.
        expect(await waits.resolve([{ runId: run.runId, stepKey: "w:0", outputJson: '{"id":"x"}' }], REQUEUE_MS)).toEqual([]);
        expect(await runRow(run.runId)).toMatchObject({ status: "RUNNING", wakes: 2 });

        // It suspends on something else, with the wake count it was claimed with.
        const outcome = await timers.suspend(run.runId, claim.lease, claim.wakes, [sleepAwait("s:0", at(HOUR))], REQUEUE_MS);
        expect(outcome).toEqual({
          kind: "resumed",
          run: { runId: run.runId, appId: run.appId, functionId: run.functionId, lease: claim.lease },
        });
        expect((await runRow(run.runId)).status).toBe("QUEUED");
        // What it waits for is recorded all the same, for the next suspension to keep.
        expect((await timersOf(run.runId)).map((t) => t.stepKey)).toEqual(["s:0"]);

        // Claimed with the current count, the same suspension waits.
        const next = await reclaim(run.runId);
        expect(next.wakes).toBe(2);
        expect(await timers.suspend(run.runId, next.lease, next.wakes, [sleepAwait("s:0", at(HOUR))], REQUEUE_MS)).toEqual({
          kind: "waiting",
          hasWaits: false,
        });
      });

      it("under a lost lease records nothing", async () => {
        const run = await claimedRun();
        const name = uniq("evt");
        const awaits = [sleepAwait("a:0", at(HOUR)), waitAwait("w:0", at(HOUR), name)];
        expect(await timers.suspend(run.runId, run.lease - 1, run.wakes, awaits, REQUEUE_MS)).toEqual({ kind: "lease-lost" });
        expect(await timers.suspend(run.runId, run.lease + 1, run.wakes, awaits, REQUEUE_MS)).toEqual({ kind: "lease-lost" });
        expect(await timers.suspend(randomUUID(), 1, 0, awaits, REQUEUE_MS)).toEqual({ kind: "lease-lost" });
        expect(await timersOf(run.runId)).toEqual([]);
        expect(await waitKeys(run.runId)).toEqual([]);
        expect((await runRow(run.runId)).status).toBe("RUNNING");

        // A finished run cannot suspend either.
        expect(await store.completeRun(run.runId, run.lease, "1")).not.toBeNull();
        expect(await timers.suspend(run.runId, run.lease, run.wakes, awaits, REQUEUE_MS)).toEqual({ kind: "lease-lost" });
        expect(await timersOf(run.runId)).toEqual([]);
        expect((await runRow(run.runId)).status).toBe("COMPLETED");
      });
    });

    describe("notifications", () => {
      /** Listens on a channel of its own; counts the notifications. */
      async function listening() {
        const channel = `timers_${randomBytes(4).toString("hex")}`;
        let count = 0;
        const stop = await db.sql.listen(channel, () => count++);
        return {
          timers: new TimerStore(db.sql, { channel }),
          store: new JournalStore(db.sql, { timerChannel: channel }),
          count: () => count,
          stop,
        };
      }

      async function eventually(cond: () => boolean): Promise<boolean> {
        for (let i = 0; i < 100 && !cond(); i++) await new Promise((r) => setTimeout(r, 20));
        return cond();
      }

      it("a suspension with a timer due within TIMER_POLL_MS wakes the schedulers; one due later does not", async () => {
        const l = await listening();
        try {
          const later = await claimedRun();
          expect((await l.timers.suspend(later.runId, later.lease, later.wakes, [sleepAwait("a:0", Date.now() + HOUR)], REQUEUE_MS)).kind).toBe(
            "waiting",
          );
          const soon = await claimedRun();
          expect((await l.timers.suspend(soon.runId, soon.lease, soon.wakes, [sleepAwait("a:0", Date.now() + 200)], REQUEUE_MS)).kind).toBe(
            "waiting",
          );
          expect(await eventually(() => l.count() >= 1)).toBe(true);
          // Only the second one notified.
          await new Promise((r) => setTimeout(r, 200));
          expect(l.count()).toBe(1);

          // A suspension refused for its lease notifies nobody.
          expect((await l.timers.suspend(soon.runId, soon.lease + 1, soon.wakes, [sleepAwait("b:0", Date.now())], REQUEUE_MS)).kind).toBe("lease-lost");
          // The same suspension again (a retry after a lost reply) is recognised as recorded, and notifies nobody either.
          expect((await l.timers.suspend(soon.runId, soon.lease, soon.wakes, [sleepAwait("b:0", Date.now())], REQUEUE_MS)).kind).toBe("waiting");
          await new Promise((r) => setTimeout(r, 200));
          expect(l.count()).toBe(1);
        } finally {
          await l.stop();
        }
      });

      it("registering a cron trigger wakes the schedulers", async () => {
        const l = await listening();
        try {
          await l.store.registerFunctions(uniq("app"), [{ id: "plain", name: "P", eventTriggers: ["e"], config: {} }]);
          await new Promise((r) => setTimeout(r, 200));
          expect(l.count()).toBe(0);
          await l.store.registerFunctions(uniq("app"), [
            { id: "cron", name: "C", eventTriggers: [], cronTriggers: [{ cron: "0 * * * *", timezone: "", firstAt: new Date(at(HOUR)) }], config: {} },
          ]);
          expect(await eventually(() => l.count() >= 1)).toBe(true);
        } finally {
          await l.stop();
        }
      });
    });

    describe("fireDue", () => {
      it("fires only due timers of WAITING runs: null for a sleep and a wait's timeout, nothing for a retry", async () => {
        await settleTimers();
        const name = uniq("evt");
        const sleeping = await waitingRun([sleepAwait("nap:0", at(-2000))]);
        const waiting = await waitingRun([waitAwait("ship:0", at(-2000), name)]);
        const retrying = await waitingRun([retryAwait("charge:0", at(-2000))]);
        const mixed = await waitingRun([sleepAwait("short:0", at(-2000)), sleepAwait("long:0", at(HOUR))]);
        const future = await waitingRun([sleepAwait("nap:0", at(HOUR))]);
        // A run with a due timer that is not WAITING (woken otherwise, now running) is left alone.
        const running = await claimedRun();
        expect(
          (await timers.suspend(running.runId, running.lease, running.wakes + 1, [sleepAwait("nap:0", at(-2000))], REQUEUE_MS)).kind,
        ).toBe("resumed");
        await reclaim(running.runId);

        const fired = await timers.fireDue(100, REQUEUE_MS);
        expect(ids(fired)).toEqual(ids([sleeping, waiting, retrying, mixed]));
        expect(fired.find((r) => r.runId === mixed.runId)).toEqual({
          runId: mixed.runId,
          appId: mixed.appId,
          functionId: mixed.functionId,
          lease: mixed.lease,
          lateMs: expect.any(Number) as number,
        });
        // Due 2 s ago: that late, and then some (the clocks are the test's and the database's, on one machine).
        for (const r of fired) expect(r.lateMs).toBeGreaterThan(1_900);
        expect(await timers.fireDue(100, REQUEUE_MS)).toEqual([]);

        for (const r of [sleeping, waiting, retrying, mixed]) {
          expect(await runRow(r.runId)).toMatchObject({ status: "QUEUED", wakes: 1 });
        }
        const sleptSteps = (await mustGet(sleeping.runId)).steps;
        expect(sleptSteps.map((s) => ({ key: s.key, id: s.id, attempt: s.attempt, output: s.output, hasOutput: s.hasOutput }))).toEqual([
          { key: "nap:0", id: "nap", attempt: 1, output: null, hasOutput: true },
        ]);
        // The sleep started when it was due.
        expect(sleptSteps[0]!.startedAt?.getTime()).toBe(at(-2000));
        expect((await mustGet(waiting.runId)).steps.map((s) => [s.key, s.output, s.hasOutput])).toEqual([["ship:0", null, true]]);
        expect(await waitKeys(waiting.runId)).toEqual([]);
        expect((await mustGet(retrying.runId)).steps).toEqual([]);
        expect((await mustGet(mixed.runId)).steps.map((s) => s.key)).toEqual(["short:0"]);
        expect((await timersOf(mixed.runId)).map((t) => t.stepKey)).toEqual(["long:0"]);
        for (const r of [sleeping, waiting, retrying]) expect(await timersOf(r.runId)).toEqual([]);

        expect(await runRow(future.runId)).toMatchObject({ status: "WAITING", wakes: 0 });
        expect((await timersOf(future.runId)).map((t) => t.stepKey)).toEqual(["nap:0"]);
        expect(await runRow(running.runId)).toMatchObject({ status: "RUNNING", wakes: 0 });
        expect((await timersOf(running.runId)).map((t) => t.stepKey)).toEqual(["nap:0"]);
        expect((await mustGet(running.runId)).steps).toEqual([]);
      });

      it("sets the short publish deadline and honours its limit, earliest first", async () => {
        await settleTimers();
        const late = await waitingRun([sleepAwait("a:0", at(-1000))]);
        const earliest = await waitingRun([sleepAwait("a:0", at(-3000))]);
        const middle = await waitingRun([sleepAwait("a:0", at(-2000))]);
        const before = Date.now();
        const first = await timers.fireDue(2, 5_000);
        expect(ids(first)).toEqual(ids([earliest, middle]));
        expect(ids(await timers.fireDue(2, 5_000))).toEqual([late.runId]);
        const row = await runRow(earliest.runId);
        expect(row.expiresMs).toBeGreaterThanOrEqual(before + 5_000 - 1000);
        expect(row.expiresMs).toBeLessThanOrEqual(Date.now() + 5_000 + 1000);
      });

      it("concurrent calls never fire the same timer twice", async () => {
        await settleTimers();
        const runs: Array<{ runId: string }> = [];
        for (let i = 0; i < 24; i++) runs.push(await waitingRun([sleepAwait("nap:0", at(-1000 - i))]));
        const fired: PublishedRunRef[] = [];
        for (let round = 0; round < 10; round++) {
          const batch = (await Promise.all([1, 2, 3, 4, 5, 6].map(() => timers.fireDue(3, REQUEUE_MS)))).flat();
          fired.push(...batch);
          if (batch.length === 0) break;
        }
        expect(fired.map((r) => r.runId).sort()).toEqual(ids(runs));
        for (const r of runs) {
          expect(await runRow(r.runId)).toMatchObject({ status: "QUEUED", wakes: 1 });
          expect((await mustGet(r.runId)).steps).toHaveLength(1);
        }
      });

      it("a run woken by its timer is claimable, and its replay finds the sleep journaled", async () => {
        await settleTimers();
        const run = await waitingRun([sleepAwait("nap:0", at(-1000))]);
        expect(await store.claimRun(run.runId, uniq("exec"), 60_000)).toBeNull();
        expect(ids(await timers.fireDue(10, REQUEUE_MS))).toEqual([run.runId]);
        const claim = await reclaim(run.runId);
        expect(claim.journal).toEqual([{ stepKey: "nap:0", outputJson: "null" }]);
        expect(claim.wakes).toBe(1);
        // Suspending again on the journaled sleep resumes at once.
        expect((await timers.suspend(run.runId, claim.lease, claim.wakes, [sleepAwait("nap:0", at(HOUR))], REQUEUE_MS)).kind).toBe(
          "resumed",
        );
      });
    });

    describe("completeRun and failRun", () => {
      /** A RUNNING run that still has a timer and a wait from an earlier suspension. */
      async function runningWithAwaits() {
        const name = uniq("evt");
        const run = await waitingRun([sleepAwait("s:0", at(HOUR)), waitAwait("w:0", at(HOUR), name), retryAwait("r:0", at(-1000))]);
        await settleTimers();
        const claim = await reclaim(run.runId);
        expect((await timersOf(run.runId)).map((t) => t.stepKey)).toEqual(["s:0", "w:0"]);
        expect(await waitKeys(run.runId)).toEqual(["w:0"]);
        return { ...run, lease: claim.lease };
      }

      it("completeRun drops the run's timers and waits", async () => {
        const run = await runningWithAwaits();
        expect(await store.completeRun(run.runId, run.lease, '"done"')).not.toBeNull();
        expect(await timersOf(run.runId)).toEqual([]);
        expect(await waitKeys(run.runId)).toEqual([]);
      });

      it("failRun drops the run's timers and waits", async () => {
        const run = await runningWithAwaits();
        expect((await store.failRun(run.runId, run.lease, { name: "Error", message: "x" })).ok).toBe(true);
        expect(await timersOf(run.runId)).toEqual([]);
        expect(await waitKeys(run.runId)).toEqual([]);
      });

      it("under a lost lease neither drops anything", async () => {
        const run = await runningWithAwaits();
        expect(await store.completeRun(run.runId, run.lease - 1, "1")).toBeNull();
        expect((await store.failRun(run.runId, run.lease - 1, { name: "Error", message: "x" })).ok).toBe(false);
        expect((await timersOf(run.runId)).map((t) => t.stepKey)).toEqual(["s:0", "w:0"]);
        expect(await waitKeys(run.runId)).toEqual(["w:0"]);
      });
    });

    describe("nextDueInMs", () => {
      it("is the time to the next timer or cron tick by the database's clock, or null", async () => {
        // Its own database: the answer depends on every timer there is.
        const fresh = await backend.open();
        extra.push(fresh);
        await migrate(fresh.sql, fresh.migrateOptions);
        const freshStore = new JournalStore(fresh.sql);
        const freshTimers = new TimerStore(fresh.sql);
        expect(await freshTimers.nextDueInMs()).toBeNull();

        await freshStore.registerFunctions("app", [{ id: "fn", name: "Fn", eventTriggers: ["e"], config: {} }]);
        const [ref] = await freshStore.recordEvent({ id: "ev", name: "e", dataJson: "{}", tsMs: T0, receivedAtMs: T0 });
        const claim = await freshStore.claimRun(ref!.runId, "exec", 60_000);
        expect(
          (await freshTimers.suspend(ref!.runId, claim!.lease, claim!.wakes, [sleepAwait("a:0", Date.now() + 10 * MINUTE)], REQUEUE_MS))
            .kind,
        ).toBe("waiting");
        let next = await freshTimers.nextDueInMs();
        expect(next).toBeGreaterThan(10 * MINUTE - 5_000);
        expect(next).toBeLessThanOrEqual(10 * MINUTE);

        // A cron tick due sooner comes first.
        await freshStore.registerFunctions("app", [
          { id: "cron", name: "Cron", eventTriggers: [], cronTriggers: [{ cron: "0 * * * *", timezone: "", firstAt: new Date(Date.now() + 2 * MINUTE) }], config: {} },
        ]);
        next = await freshTimers.nextDueInMs();
        expect(next).toBeGreaterThan(2 * MINUTE - 5_000);
        expect(next).toBeLessThanOrEqual(2 * MINUTE);
      });

      it("ignores a schedule that will never fire again", async () => {
        const fresh = await backend.open();
        extra.push(fresh);
        await migrate(fresh.sql, fresh.migrateOptions);
        const freshStore = new JournalStore(fresh.sql);
        const freshTimers = new TimerStore(fresh.sql);
        await freshStore.registerFunctions("app", [
          { id: "cron", name: "Cron", eventTriggers: [], cronTriggers: [{ cron: "0 * * * *", timezone: "", firstAt: new Date(Date.now() - MINUTE) }], config: {} },
        ]);
        // The scheduler's `next` finds no later tick (a schedule that no longer parses): next_at is infinity.
        expect(await freshTimers.fireCron(10, REQUEUE_MS, () => null)).toHaveLength(1);
        expect(await freshTimers.fireCron(10, REQUEUE_MS, () => null)).toEqual([]);
        expect(await freshTimers.nextDueInMs()).toBeNull();
      });
    });

    describe("cron schedules", () => {
      const cronFn = (id: string, crons: Array<{ cron: string; timezone?: string; firstAt: Date }>) => ({
        id,
        name: id,
        eventTriggers: [],
        cronTriggers: crons.map((c) => ({ cron: c.cron, timezone: c.timezone ?? "", firstAt: c.firstAt })),
        config: {},
      });

      async function nextAt(appId: string, functionId: string): Promise<Array<number | null>> {
        const rows = await db.sql.query<{ ms: number | string | null; fin: boolean }>(
          `SELECT (CASE WHEN isfinite(next_at) THEN extract(epoch FROM next_at) * 1000 END)::float8 AS ms, isfinite(next_at) AS fin
           FROM cron_schedules WHERE app_id = $1 AND function_id = $2 ORDER BY trigger_index`,
          [appId, functionId],
        );
        return rows.map((r) => (r.fin ? Math.round(Number(r.ms)) : null));
      }

      it("fireCron creates one run per due tick and moves the schedule to the tick next gives", async () => {
        await settleCrons();
        const appId = uniq("app");
        const tick = at(-5 * MINUTE);
        const following = at(HOUR);
        await store.registerFunctions(appId, [
          cronFn("report", [{ cron: "*/5 * * * *", timezone: "Europe/Paris", firstAt: new Date(tick) }]),
        ]);
        const calls: Array<{ due: DueCron; nowMs: number }> = [];
        const before = Date.now();
        const fired = await timers.fireCron(10, REQUEUE_MS, (due, nowMs) => {
          calls.push({ due, nowMs });
          return new Date(following);
        });
        expect(calls).toHaveLength(1);
        expect(calls[0]!.due).toEqual({ appId, functionId: "report", triggerIndex: 0, cron: "*/5 * * * *", timezone: "Europe/Paris", tickMs: tick });
        expect(calls[0]!.nowMs).toBeGreaterThanOrEqual(before - 1000);
        expect(calls[0]!.nowMs).toBeLessThanOrEqual(Date.now() + 1000);
        expect(fired).toHaveLength(1);
        expect(fired[0]).toMatchObject({ appId, functionId: "report", lease: 0 });

        const run = await mustGet(fired[0]!.runId);
        expect(run.status).toBe("QUEUED");
        expect(run.event.id).toBe(`stepwise-cron-${appId}-report-0-${tick}`);
        expect(run.event.name).toBe("stepwise/cron");
        expect(run.event.data).toEqual({ cron: "*/5 * * * *", timezone: "Europe/Paris", tick: new Date(tick).toISOString() });
        expect(run.event.ts.getTime()).toBe(tick);
        expect(await nextAt(appId, "report")).toEqual([following]);

        // Not due any more: nothing fires, nothing moves.
        expect(await timers.fireCron(10, REQUEUE_MS, () => new Date(following + HOUR))).toEqual([]);
        expect(await nextAt(appId, "report")).toEqual([following]);
        expect(await store.listRuns({ functionId: "report", eventId: run.event.id, limit: 10 })).toHaveLength(1);
      });

      it("a registration without a cron function drops its schedules, and keeps the others' next ticks", async () => {
        const appId = uniq("app");
        const first = at(HOUR);
        await store.registerFunctions(appId, [
          cronFn("kept", [{ cron: "0 * * * *", firstAt: new Date(first) }]),
          cronFn("dropped", [{ cron: "0 * * * *", firstAt: new Date(first) }]),
        ]);
        expect(await nextAt(appId, "dropped")).toEqual([first]);
        await store.registerFunctions(appId, [cronFn("kept", [{ cron: "0 * * * *", firstAt: new Date(first + HOUR) }])]);
        expect(await nextAt(appId, "dropped")).toEqual([]);
        expect(await nextAt(appId, "kept")).toEqual([first]);
      });

      it("fires each due trigger of a function, and a tick already fired never makes a second run", async () => {
        await settleCrons();
        const appId = uniq("app");
        const tick = at(-10 * MINUTE);
        await store.registerFunctions(appId, [
          cronFn("multi", [
            { cron: "*/10 * * * *", firstAt: new Date(tick) },
            { cron: "0 * * * *", firstAt: new Date(tick) },
          ]),
        ]);
        const fired = await timers.fireCron(10, REQUEUE_MS, () => new Date(at(HOUR)));
        expect(fired).toHaveLength(2);
        const events = await Promise.all(fired.map(async (r) => (await mustGet(r.runId)).event.id));
        expect(events.sort()).toEqual([`stepwise-cron-${appId}-multi-0-${tick}`, `stepwise-cron-${appId}-multi-1-${tick}`]);

        // The schedule is changed and its first tick is one that already fired: no second run for it.
        await store.registerFunctions(appId, [cronFn("multi", [{ cron: "*/15 * * * *", firstAt: new Date(tick) }])]);
        expect(await nextAt(appId, "multi")).toEqual([tick]);
        expect(await timers.fireCron(10, REQUEUE_MS, () => new Date(at(2 * HOUR)))).toEqual([]);
        expect(await nextAt(appId, "multi")).toEqual([at(2 * HOUR)]);
        expect(await store.listRuns({ functionId: "multi", limit: 10 })).toHaveLength(2);
      });

      it("a schedule whose next gives null stops firing", async () => {
        await settleCrons();
        const appId = uniq("app");
        await store.registerFunctions(appId, [cronFn("once", [{ cron: "0 * * * *", firstAt: new Date(at(-MINUTE)) }])]);
        expect(await timers.fireCron(10, REQUEUE_MS, () => null)).toHaveLength(1);
        expect(await nextAt(appId, "once")).toEqual([null]);
        expect(await timers.fireCron(10, REQUEUE_MS, () => null)).toEqual([]);
      });

      it("concurrent fireCron calls never create a tick twice", async () => {
        await settleCrons();
        const appId = uniq("app");
        const tick = at(-MINUTE);
        const fns = Array.from({ length: 15 }, (_, i) => cronFn(`c${i}`, [{ cron: "* * * * *", firstAt: new Date(tick) }]));
        await store.registerFunctions(appId, fns);
        const fired: PublishedRunRef[] = [];
        for (let round = 0; round < 10; round++) {
          const batch = (await Promise.all([1, 2, 3, 4, 5].map(() => timers.fireCron(2, REQUEUE_MS, () => new Date(at(HOUR)))))).flat();
          fired.push(...batch);
          if (batch.length === 0) break;
        }
        expect(fired.map((r) => r.functionId).sort()).toEqual(fns.map((f) => f.id).sort());
        expect(new Set(fired.map((r) => r.runId)).size).toBe(15);
        for (const f of fns) {
          expect(await store.listRuns({ functionId: f.id, eventId: `stepwise-cron-${appId}-${f.id}-0-${tick}`, limit: 10 })).toHaveLength(1);
          expect(await nextAt(appId, f.id)).toEqual([at(HOUR)]);
        }
      });

      it("registerFunctions keeps a schedule's next tick when it is unchanged and resets it when it changes", async () => {
        await settleCrons();
        const appId = uniq("app");
        const first = at(-MINUTE);
        await store.registerFunctions(appId, [cronFn("nightly", [{ cron: "0 3 * * *", timezone: "Europe/Paris", firstAt: new Date(first) }])]);
        expect(await timers.fireCron(10, REQUEUE_MS, () => new Date(at(HOUR)))).toHaveLength(1);
        expect(await nextAt(appId, "nightly")).toEqual([at(HOUR)]);

        // The worker reconnects with the same schedule: neither skips nor repeats a tick.
        await store.registerFunctions(appId, [cronFn("nightly", [{ cron: "0 3 * * *", timezone: "Europe/Paris", firstAt: new Date(at(5 * HOUR)) }])]);
        expect(await nextAt(appId, "nightly")).toEqual([at(HOUR)]);

        // Another time zone, or another pattern, starts over from the new first tick.
        await store.registerFunctions(appId, [cronFn("nightly", [{ cron: "0 3 * * *", timezone: "Asia/Tokyo", firstAt: new Date(at(6 * HOUR)) }])]);
        expect(await nextAt(appId, "nightly")).toEqual([at(6 * HOUR)]);
        await store.registerFunctions(appId, [
          cronFn("nightly", [
            { cron: "0 4 * * *", timezone: "Asia/Tokyo", firstAt: new Date(at(7 * HOUR)) },
            { cron: "0 5 * * *", firstAt: new Date(at(8 * HOUR)) },
          ]),
        ]);
        expect(await nextAt(appId, "nightly")).toEqual([at(7 * HOUR), at(8 * HOUR)]);

        // Dropping a trigger drops its schedule.
        await store.registerFunctions(appId, [cronFn("nightly", [{ cron: "0 4 * * *", timezone: "Asia/Tokyo", firstAt: new Date(at(9 * HOUR)) }])]);
        expect(await nextAt(appId, "nightly")).toEqual([at(7 * HOUR)]);
        await store.registerFunctions(appId, [{ id: "nightly", name: "N", eventTriggers: ["e"], config: {} }]);
        expect(await nextAt(appId, "nightly")).toEqual([]);
      });
    });
  });
}

for (const backend of backends) timerSuite(backend);
