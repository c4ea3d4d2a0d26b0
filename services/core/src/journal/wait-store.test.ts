import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { compileCondition } from "../conditions/cel-condition.js";
import { JournalStore } from "./journal-store.js";
import type { EventInput, PublishedRunRef } from "./types.js";
import { testBackends, type TestBackend, type TestDatabase, uniq } from "../testing/test-database.js";
import { migrate } from "./migrations.js";
import { type AwaitRecord, TimerStore } from "./timer-store.js";
import { waitOutputJson } from "../conditions/wait-matching.js";
import { LOOKBACK_PAGE, type WaitEvent, WaitStore } from "./wait-store.js";

// One conformance suite, run against real Postgres and against PGlite, as
// journal-store.test.ts: step.waitForEvent must find the same events under
// `stepwise dev` and in a deployment.

const backends = testBackends("ws");

const T0 = 1_700_000_000_123;
const HOUR = 3_600_000;
const REQUEUE_MS = 60_000;

const pause = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));


let base = 0;
beforeEach(() => {
  base = Math.floor(Date.now() / 1000) * 1000;
});

/** A time relative to the test's start, in whole seconds. */
function at(offsetMs: number): number {
  return base + offsetMs;
}

function ids(refs: readonly { runId: string }[]): string[] {
  return refs.map((r) => r.runId).sort();
}

/** A wait as the executor records it: the equality comes from compiling the condition. */
function waitAwait(stepKey: string, event: string, condition: string | null, dueAtMs = at(HOUR)): AwaitRecord {
  return {
    stepKey,
    stepId: stepKey.split(":")[0] ?? stepKey,
    kind: "wait",
    dueAtMs,
    event,
    condition,
    equality: condition === null ? undefined : compileCondition(condition, ["event", "async"]).equality,
  };
}

const BY_ORDER = "event.data.orderId == async.data.orderId";

function waitSuite(backend: TestBackend): void {
  describe(`WaitStore on ${backend.name}`, () => {
    let db: TestDatabase;
    let store: JournalStore;
    let timers: TimerStore;
    let waits: WaitStore;

    beforeAll(async () => {
      db = await backend.open();
      await migrate(db.sql, db.migrateOptions);
      store = new JournalStore(db.sql);
      timers = new TimerStore(db.sql);
      waits = new WaitStore(db.sql);
    });

    afterAll(async () => {
      await db?.drop();
    });

    /** A run of a fresh function triggered by an event with this data, claimed. */
    async function claimedRun(data: unknown) {
      const appId = uniq("app");
      const name = uniq("order.placed");
      await store.registerFunctions(appId, [{ id: "fn", name: "Fn", eventTriggers: [name], config: {} }]);
      const event: EventInput = { id: uniq("ev"), name, dataJson: JSON.stringify(data), tsMs: T0, receivedAtMs: T0 };
      const [ref] = await store.recordEvent(event);
      expect(ref).toBeDefined();
      const claim = await store.claimRun(ref!.runId, uniq("exec"), 60_000);
      expect(claim).not.toBeNull();
      return { runId: ref!.runId, appId, functionId: "fn", lease: claim!.lease, wakes: claim!.wakes, event };
    }

    async function suspend(run: { runId: string; lease: number; wakes: number }, awaits: AwaitRecord[]): Promise<void> {
      expect(await timers.suspend(run.runId, run.lease, run.wakes, awaits, REQUEUE_MS)).toEqual({ kind: "waiting", hasWaits: true });
    }

    async function waitingRun(data: unknown, awaits: AwaitRecord[]) {
      const run = await claimedRun(data);
      await suspend(run, awaits);
      return run;
    }

    /** Stores an event as the scheduler does; returns it as waits see it, with when it was stored. */
    async function storeEvent(name: string, data: unknown): Promise<{ event: WaitEvent; storedAtMs: number }> {
      const input: EventInput = { id: uniq("ev"), name, dataJson: JSON.stringify(data), tsMs: T0 + 5, receivedAtMs: T0 + 6 };
      const recorded = await store.recordEventMatching(input);
      return { event: { id: input.id, name, dataJson: input.dataJson, tsMs: input.tsMs }, storedAtMs: recorded.storedAtMs };
    }

    function runEventOf(run: { event: EventInput }) {
      return { id: run.event.id, name: run.event.name, data: JSON.parse(run.event.dataJson) as unknown, tsMs: T0 };
    }

    /** Candidates with JSON parsed, so jsonb's re-serialisation does not matter; sorted by run. */
    async function candidatesOf(found: { event: WaitEvent; storedAtMs: number }) {
      const list = await waits.candidates(found.event, found.storedAtMs);
      return list
        .map((c) => ({
          runId: c.runId,
          stepKey: c.stepKey,
          condition: c.condition,
          runEvent: { id: c.runEvent.id, name: c.runEvent.name, data: JSON.parse(c.runEvent.dataJson) as unknown, tsMs: c.runEvent.tsMs },
        }))
        .sort((a, b) => a.runId.localeCompare(b.runId) || a.stepKey.localeCompare(b.stepKey));
    }

    async function waitRow(runId: string, stepKey: string) {
      const rows = await db.sql.query<{ key_path: string; key_value: string; condition: string | null; since: Date }>(
        "SELECT key_path, key_value, condition, since FROM waits WHERE run_id = $1 AND step_key = $2",
        [runId, stepKey],
      );
      return rows[0];
    }

    async function stepsOf(runId: string) {
      return (await store.getRun(runId))!.steps.map((s) => ({ key: s.key, output: s.output }));
    }

    async function wakesOf(runId: string): Promise<{ status: string; wakes: number }> {
      const rows = await db.sql.query<{ status: string; wakes: number }>("SELECT status, wakes FROM runs WHERE id = $1", [runId]);
      return { status: rows[0]!.status, wakes: Number(rows[0]!.wakes) };
    }

    describe("an event limited to one app (sent with an event key of that app)", () => {
      it("starts only that app's runs, resolves only its runs' waits, and is looked back for by no other app's", async () => {
        const name = uniq("order.placed");
        const [shop, billing] = [uniq("shop"), uniq("billing")];
        for (const app of [shop, billing]) await store.registerFunctions(app, [{ id: "fn", name: "Fn", eventTriggers: [name], config: {} }]);
        const limited: EventInput = { id: uniq("ev"), name, dataJson: "{}", tsMs: T0, receivedAtMs: T0, appId: shop };
        const recorded = await store.recordEventMatching(limited);
        expect(recorded.runs.map((r) => r.appId)).toEqual([shop]);
        const stored = await db.sql.query<{ app_id: string | null }>("SELECT app_id FROM events WHERE id = $1", [limited.id]);
        expect(stored[0]!.app_id).toBe(shop);
        const open: EventInput = { id: uniq("ev"), name, dataJson: "{}", tsMs: T0, receivedAtMs: T0 };
        expect((await store.recordEventMatching(open)).runs.map((r) => r.appId).sort()).toEqual([shop, billing].sort());

        // Two runs, of two apps, waiting for the same event.
        const awaited = uniq("payment.received");
        const waitingOf = async (app: string) => {
          const trigger = uniq("cart");
          await store.registerFunctions(app, [{ id: uniq("waiter"), name: "W", eventTriggers: [trigger], config: {} }]);
          const [ref] = await store.recordEvent({ id: uniq("ev"), name: trigger, dataJson: "{}", tsMs: T0, receivedAtMs: T0 });
          const claim = (await store.claimRun(ref!.runId, uniq("exec"), 60_000))!;
          await suspend({ runId: claim.runId, lease: claim.lease, wakes: claim.wakes }, [waitAwait("w:0", awaited, null)]);
          return claim.runId;
        };
        const shopRun = await waitingOf(shop);
        const billingRun = await waitingOf(billing);
        const input: EventInput = { id: uniq("ev"), name: awaited, dataJson: "{}", tsMs: T0 + 5, receivedAtMs: T0 + 6, appId: shop };
        const paid = await store.recordEventMatching(input);
        const asWait: WaitEvent = { id: input.id, name: awaited, dataJson: "{}", tsMs: input.tsMs, appId: shop };
        expect((await waits.candidates(asWait, paid.storedAtMs)).map((c) => c.runId)).toEqual([shopRun]);
        const unlimited = await waits.candidates({ ...asWait, appId: undefined }, paid.storedAtMs);
        expect(unlimited.map((c) => c.runId).sort()).toEqual([shopRun, billingRun].sort());
        // A wait that looks back at events stored since it began sees it only from the same app.
        expect((await waits.lookback(shopRun)).map((c) => c.event.id)).toEqual([input.id]);
        expect(await waits.lookback(billingRun)).toEqual([]);
      });
    });

    describe("a suspension's waits", () => {
      it("are indexed by the run's string value at the equality's path, and not otherwise", async () => {
        const name = uniq("shipment.created");
        const text = await waitingRun({ orderId: "o-1" }, [waitAwait("w:0", name, BY_ORDER)]);
        const number = await waitingRun({ orderId: 42 }, [waitAwait("w:0", name, BY_ORDER)]);
        const missing = await waitingRun({}, [waitAwait("w:0", name, BY_ORDER)]);
        const any = await waitingRun({ orderId: "o-1" }, [waitAwait("w:0", name, null)]);
        const nested = await waitingRun({ order: { id: "n-1" } }, [
          waitAwait("w:0", name, "async.data.status == 'ok' && async.data.ref.order == event.data.order.id"),
        ]);

        expect(await waitRow(text.runId, "w:0")).toMatchObject({ key_path: "data.orderId", key_value: "o-1", condition: BY_ORDER });
        expect(await waitRow(number.runId, "w:0")).toMatchObject({ key_path: "", key_value: "", condition: BY_ORDER });
        expect(await waitRow(missing.runId, "w:0")).toMatchObject({ key_path: "", key_value: "" });
        expect(await waitRow(any.runId, "w:0")).toMatchObject({ key_path: "", key_value: "", condition: null });
        expect(await waitRow(nested.runId, "w:0")).toMatchObject({ key_path: "data.ref.order", key_value: "n-1" });

        const paths = await db.sql.query<{ key_path: string }>("SELECT key_path FROM wait_paths WHERE event_name = $1 ORDER BY key_path", [name]);
        expect(paths.map((p) => p.key_path)).toEqual(["data.orderId", "data.ref.order"]);
      });

      it("begin at the commit of the step before the last one, or at the run's creation", async () => {
        const name = uniq("evt");
        // The last step may have caused an event (a webhook it called) that was stored before its own result.
        const journal = async (run: { runId: string; lease: number }, key: string) =>
          expect(
            await store.journalStep({ runId: run.runId, lease: run.lease, stepKey: key, stepId: key, attempt: 1, startedAtMs: T0, endedAtMs: T0, outputJson: "1" }),
          ).toEqual({ kind: "journaled" });

        const fresh = await waitingRun({}, [waitAwait("w:0", name, null)]);
        const created = (await store.getRun(fresh.runId))!.createdAt;
        expect((await waitRow(fresh.runId, "w:0"))!.since.getTime()).toBe(created.getTime());

        const oneStep = await claimedRun({});
        await journal(oneStep, "a:0");
        await suspend(oneStep, [waitAwait("w:0", name, null)]);
        expect((await waitRow(oneStep.runId, "w:0"))!.since.getTime()).toBe((await store.getRun(oneStep.runId))!.createdAt.getTime());

        const threeSteps = await claimedRun({});
        for (const key of ["a:0", "b:0", "c:0"]) await journal(threeSteps, key);
        await suspend(threeSteps, [waitAwait("w:0", name, null)]);
        const steps = (await store.getRun(threeSteps.runId))!.steps;
        expect((await waitRow(threeSteps.runId, "w:0"))!.since.getTime()).toBe(steps[1]!.journaledAt.getTime());
      });

      it("after a resolved wait or a sleep, begin at its commit: an event it consumed, or one from during the sleep, does not count", async () => {
        const name = uniq("approval");
        const run = await claimedRun({ doc: "d-1" });
        await suspend(run, [waitAwait("first:0", name, null)]);
        const approval = await storeEvent(name, { doc: "d-1" });
        // The scheduler resolves the first wait with it.
        expect(ids(await waits.resolve([{ runId: run.runId, stepKey: "first:0", outputJson: waitOutputJson(approval.event) }], REQUEUE_MS))).toEqual([run.runId]);
        const again = (await store.claimRun(run.runId, uniq("exec"), 60_000))!;
        expect(await timers.suspend(again.runId, again.lease, again.wakes, [waitAwait("second:0", name, null)], REQUEUE_MS)).toEqual({
          kind: "waiting",
          hasWaits: true,
        });
        const resolvedAt = (await store.getRun(run.runId))!.steps.find((s) => s.key === "first:0")!.journaledAt;
        expect((await waitRow(run.runId, "second:0"))!.since.getTime()).toBe(resolvedAt.getTime());
        expect(await waits.lookback(run.runId)).toEqual([]);
        expect(await candidatesOf(approval)).toEqual([]);
      });

      it("a run's own triggering event never resolves its waits", async () => {
        const name = uniq("cart.updated");
        const appId = uniq("app");
        await store.registerFunctions(appId, [{ id: "fn", name: "Fn", eventTriggers: [name], config: {} }]);
        const trigger: EventInput = { id: uniq("ev"), name, dataJson: JSON.stringify({ cart: "c-1" }), tsMs: T0, receivedAtMs: T0 };
        const recorded = await store.recordEventMatching(trigger);
        const [ref] = recorded.runs;
        const claim = (await store.claimRun(ref!.runId, uniq("exec"), 60_000))!;
        const byCart = "event.data.cart == async.data.cart";
        await timers.suspend(claim.runId, claim.lease, claim.wakes, [waitAwait("next:0", name, byCart)], REQUEUE_MS);
        expect(await waits.lookback(claim.runId)).toEqual([]);
        const asWait = { id: trigger.id, name, dataJson: trigger.dataJson, tsMs: T0 };
        expect(await waits.candidates(asWait, recorded.storedAtMs)).toEqual([]);
        expect(await waits.candidatesMany([{ event: asWait, storedAtMs: recorded.storedAtMs }, { event: asWait, storedAtMs: recorded.storedAtMs }])).toEqual([[], []]);
        const next = await storeEvent(name, { cart: "c-1" });
        expect((await waits.lookback(claim.runId)).map((c) => c.event.id)).toEqual([next.event.id]);
      });

      it("a wait whose key is too long for the index is kept unindexed and still matches", async () => {
        const name = uniq("token.used");
        const token = "t".repeat(6_000);
        const run = await waitingRun({ token }, [waitAwait("w:0", name, "event.data.token == async.data.token")]);
        expect(await waitRow(run.runId, "w:0")).toMatchObject({ key_path: "", key_value: "" });
        const used = await storeEvent(name, { token });
        expect((await candidatesOf(used)).map((c) => c.runId)).toEqual([run.runId]);
      });
    });

    describe("candidates", () => {
      it("finds indexed waits by the event's value, and every unindexed wait of the name", async () => {
        const name = uniq("shipment.created");
        const other = uniq("invoice.paid");
        const o1 = await waitingRun({ orderId: "o-1" }, [waitAwait("ship:0", name, BY_ORDER)]);
        const o2 = await waitingRun({ orderId: "o-2" }, [waitAwait("ship:0", name, BY_ORDER)]);
        const numeric = await waitingRun({ orderId: 7 }, [waitAwait("ship:0", name, BY_ORDER)]);
        const anyOne = await waitingRun({ orderId: "o-3" }, [waitAwait("ship:0", name, null), waitAwait("pay:0", other, null)]);

        expect(await candidatesOf(await storeEvent(name, { orderId: "o-1", carrier: "ups" }))).toEqual(
          [
            { runId: o1.runId, stepKey: "ship:0", condition: BY_ORDER, runEvent: runEventOf(o1) },
            { runId: numeric.runId, stepKey: "ship:0", condition: BY_ORDER, runEvent: runEventOf(numeric) },
            { runId: anyOne.runId, stepKey: "ship:0", condition: null, runEvent: runEventOf(anyOne) },
          ].sort((a, b) => a.runId.localeCompare(b.runId)),
        );
        expect((await candidatesOf(await storeEvent(name, { orderId: "o-2" }))).map((c) => c.runId)).toEqual(
          ids([o2, numeric, anyOne]),
        );
        // A value that is not a string, or no value, uses no index: only the unindexed waits.
        expect((await candidatesOf(await storeEvent(name, { orderId: 7 }))).map((c) => c.runId)).toEqual(ids([numeric, anyOne]));
        expect((await candidatesOf(await storeEvent(name, {}))).map((c) => c.runId)).toEqual(ids([numeric, anyOne]));
        // Another name finds only its own waits.
        expect(await candidatesOf(await storeEvent(other, { orderId: "o-1" }))).toEqual([
          { runId: anyOne.runId, stepKey: "pay:0", condition: null, runEvent: runEventOf(anyOne) },
        ]);
        expect(await candidatesOf(await storeEvent(uniq("nobody.waits"), { orderId: "o-1" }))).toEqual([]);
      });

      it("skips waits that began after the event was stored", async () => {
        const name = uniq("evt");
        const early = await storeEvent(name, { orderId: "o-1" });
        // A run is created in a later millisecond (its creation time is whole milliseconds).
        await pause(5);
        await waitingRun({ orderId: "o-1" }, [waitAwait("w:0", name, BY_ORDER)]);
        await waitingRun({ orderId: "o-1" }, [waitAwait("w:0", name, null)]);
        expect(await candidatesOf(early)).toEqual([]);
        expect(await candidatesOf(await storeEvent(name, { orderId: "o-1" }))).toHaveLength(2);
      });

      it("candidatesMany answers each event of a batch as candidates does, in order", async () => {
        const name = uniq("shipment.created");
        const o1 = await waitingRun({ orderId: "o-1" }, [waitAwait("ship:0", name, BY_ORDER)]);
        const o2 = await waitingRun({ orderId: "o-2" }, [waitAwait("ship:0", name, BY_ORDER)]);
        const anyOne = await waitingRun({}, [waitAwait("ship:0", name, null)]);
        const batch = [
          await storeEvent(name, { orderId: "o-2" }),
          await storeEvent(uniq("other"), { orderId: "o-1" }),
          await storeEvent(name, { orderId: "o-1" }),
          await storeEvent(name, { orderId: 1 }),
        ];
        const many = await waits.candidatesMany(batch);
        expect(many).toHaveLength(4);
        for (const [i, found] of batch.entries()) {
          const one = await waits.candidates(found.event, found.storedAtMs);
          const key = (c: { runId: string; stepKey: string }) => `${c.runId}/${c.stepKey}`;
          expect(many[i]!.map(key).sort()).toEqual(one.map(key).sort());
        }
        expect(many.map((list) => ids(list))).toEqual([ids([o2, anyOne]), [], ids([o1, anyOne]), ids([anyOne])]);
        expect(await waits.candidatesMany([])).toEqual([]);
      });

      it("recordEventMatching gives the time the event was first stored, also on a redelivery", async () => {
        const input: EventInput = { id: uniq("ev"), name: uniq("evt"), dataJson: "{}", tsMs: T0, receivedAtMs: T0 };
        const before = Date.now();
        const first = await store.recordEventMatching(input);
        const after = Date.now();
        expect(first.storedAtMs).toBeGreaterThanOrEqual(before - 1000);
        expect(first.storedAtMs).toBeLessThanOrEqual(after + 1000);
        expect((await store.recordEventMatching(input)).storedAtMs).toBe(first.storedAtMs);
      });
    });

    describe("lookback", () => {
      it("finds the events stored since each wait began that may resolve it, oldest first", async () => {
        const name = uniq("shipment.created");
        const other = uniq("invoice.paid");
        const run = await claimedRun({ orderId: "o-1" });
        // Stored while the handler ran, before the suspension was recorded.
        const match1 = await storeEvent(name, { orderId: "o-1", n: 1 });
        await storeEvent(name, { orderId: "o-2" });
        const paid = await storeEvent(other, { amount: 3 });
        await suspend(run, [waitAwait("ship:0", name, BY_ORDER), waitAwait("pay:0", other, null)]);
        const match2 = await storeEvent(name, { orderId: "o-1", n: 2 });

        const found = await waits.lookback(run.runId);
        expect(
          found.map((c) => ({ stepKey: c.stepKey, condition: c.condition, eventId: c.event.id, data: JSON.parse(c.event.dataJson) as unknown })),
        ).toEqual([
          { stepKey: "ship:0", condition: BY_ORDER, eventId: match1.event.id, data: { orderId: "o-1", n: 1 } },
          { stepKey: "pay:0", condition: null, eventId: paid.event.id, data: { amount: 3 } },
          { stepKey: "ship:0", condition: BY_ORDER, eventId: match2.event.id, data: { orderId: "o-1", n: 2 } },
        ]);
        for (const c of found) {
          expect(c.event.tsMs).toBe(T0 + 5);
          expect({ ...c.runEvent, dataJson: JSON.parse(c.runEvent.dataJson) as unknown }).toEqual({
            id: run.event.id,
            name: run.event.name,
            dataJson: { orderId: "o-1" },
            tsMs: T0,
          });
        }
      });

      it("does not find events stored before the wait began, nor waits of other runs", async () => {
        const name = uniq("evt");
        await storeEvent(name, { orderId: "o-1" });
        await pause(5);
        const run = await waitingRun({ orderId: "o-1" }, [waitAwait("w:0", name, null)]);
        expect(await waits.lookback(run.runId)).toEqual([]);
        const otherRun = await waitingRun({ orderId: "o-1" }, [waitAwait("w:0", uniq("evt"), null)]);
        await storeEvent(name, { orderId: "o-1" });
        expect(await waits.lookback(otherRun.runId)).toEqual([]);
        expect(await waits.lookback(randomUUID())).toEqual([]);
      });

      it("pages through more events than one page holds, so a match after many non-matching ones is found", async () => {
        const name = uniq("noisy");
        const run = await claimedRun({ orderId: "o-1" });
        // Stored before the suspension, all of them candidates of an unindexed condition.
        const noise = Array.from({ length: LOOKBACK_PAGE + 5 }, (_, i) => ({
          id: uniq("ev"),
          name,
          dataJson: JSON.stringify({ orderId: `x-${i}` }),
          tsMs: T0 + 5,
          receivedAtMs: T0 + 6,
        }));
        await store.recordEventsMatching(noise);
        const match = await storeEvent(name, { orderId: "o-1" });
        await suspend(run, [waitAwait("w:0", name, "async.data.orderId + '' == event.data.orderId")]);
        const first = await waits.lookback(run.runId);
        expect(first).toHaveLength(LOOKBACK_PAGE);
        const seen = [...first];
        for (let page = first; page.length === LOOKBACK_PAGE; ) {
          page = await waits.lookback(run.runId, page[page.length - 1]);
          seen.push(...page);
        }
        expect(seen).toHaveLength(LOOKBACK_PAGE + 6);
        expect(new Set(seen.map((c) => c.event.id)).size).toBe(LOOKBACK_PAGE + 6);
        expect(seen[seen.length - 1]?.event.id).toBe(match.event.id);
      });
    });

    describe("resolve", () => {
      it("journals the event as the step's result, drops the wait and its timeout, and queues the run", async () => {
        const name = uniq("evt");
        const run = await waitingRun({ orderId: "o-1" }, [waitAwait("w:0", name, BY_ORDER), waitAwait("other:0", name, null)]);
        const output = { id: "e-9", name, data: { orderId: "o-1" }, ts: new Date(T0).toISOString() };
        const woken = await waits.resolve([{ runId: run.runId, stepKey: "w:0", outputJson: JSON.stringify(output) }], REQUEUE_MS);
        expect(woken).toEqual([{ runId: run.runId, appId: run.appId, functionId: run.functionId, lease: run.lease }]);
        expect(await wakesOf(run.runId)).toEqual({ status: "QUEUED", wakes: 1 });
        expect(await stepsOf(run.runId)).toEqual([{ key: "w:0", output }]);
        const left = await db.sql.query<{ step_key: string }>(
          "SELECT step_key FROM waits WHERE run_id = $1 UNION ALL SELECT step_key FROM timers WHERE run_id = $1",
          [run.runId],
        );
        expect(left.map((r) => r.step_key)).toEqual(["other:0", "other:0"]);

        // A second event for the same wait changes nothing.
        expect(await waits.resolve([{ runId: run.runId, stepKey: "w:0", outputJson: '{"id":"late"}' }], REQUEUE_MS)).toEqual([]);
        expect(await stepsOf(run.runId)).toEqual([{ key: "w:0", output }]);
        expect(await wakesOf(run.runId)).toEqual({ status: "QUEUED", wakes: 1 });

        const claim = await store.claimRun(run.runId, uniq("exec"), 60_000);
        expect(claim!.journal.map((e) => [e.stepKey, JSON.parse(e.outputJson!) as unknown])).toEqual([["w:0", output]]);
      });

      it("journals once when called concurrently, and queues the run once", async () => {
        const name = uniq("evt");
        const run = await waitingRun({}, [waitAwait("w:0", name, null)]);
        const results = await Promise.all(
          [1, 2, 3, 4].map((n) => waits.resolve([{ runId: run.runId, stepKey: "w:0", outputJson: `{"n":${n}}` }], REQUEUE_MS)),
        );
        expect(results.flat().map((r) => r.runId)).toEqual([run.runId]);
        const steps = await stepsOf(run.runId);
        expect(steps).toHaveLength(1);
        const winner = results.findIndex((r) => r.length === 1) + 1;
        expect(steps[0]).toEqual({ key: "w:0", output: { n: winner } });
        expect(await wakesOf(run.runId)).toEqual({ status: "QUEUED", wakes: 1 });
      });

      it("the same wait twice in one call journals once; several runs are woken at once", async () => {
        const name = uniq("evt");
        const a = await waitingRun({}, [waitAwait("w:0", name, null)]);
        const b = await waitingRun({}, [waitAwait("w:0", name, null)]);
        const woken = await waits.resolve(
          [
            { runId: a.runId, stepKey: "w:0", outputJson: '{"n":1}' },
            { runId: a.runId, stepKey: "w:0", outputJson: '{"n":1}' },
            { runId: b.runId, stepKey: "w:0", outputJson: '{"n":2}' },
            { runId: randomUUID(), stepKey: "w:0", outputJson: '{"n":3}' },
          ],
          REQUEUE_MS,
        );
        expect(ids(woken)).toEqual(ids([a, b]));
        expect(await stepsOf(a.runId)).toEqual([{ key: "w:0", output: { n: 1 } }]);
        expect(await stepsOf(b.runId)).toEqual([{ key: "w:0", output: { n: 2 } }]);
        expect(await waits.resolve([], REQUEUE_MS)).toEqual([]);
      });

      it("does nothing once the wait's timeout fired", async () => {
        const name = uniq("evt");
        const run = await waitingRun({}, [waitAwait("w:0", name, null, at(-1000))]);
        let fired: PublishedRunRef[];
        do fired = await timers.fireDue(1000, REQUEUE_MS);
        while (fired.length > 0);
        expect(await stepsOf(run.runId)).toEqual([{ key: "w:0", output: null }]);
        expect(await waits.resolve([{ runId: run.runId, stepKey: "w:0", outputJson: '{"late":true}' }], REQUEUE_MS)).toEqual([]);
        expect(await stepsOf(run.runId)).toEqual([{ key: "w:0", output: null }]);
        expect(await wakesOf(run.runId)).toEqual({ status: "QUEUED", wakes: 1 });
      });

      it("racing with the wait's timeout, exactly one of them resolves it", async () => {
        const name = uniq("evt");
        const runs: Array<{ runId: string }> = [];
        for (let i = 0; i < 12; i++) runs.push(await waitingRun({}, [waitAwait("w:0", name, null, at(-1000))]));
        const woken = (
          await Promise.all([
            // Both take a wait's timer before the wait itself: no deadlock.
            timers.fireDue(1000, REQUEUE_MS),
            waits.resolve(runs.map((r) => ({ runId: r.runId, stepKey: "w:0", outputJson: '{"event":true}' })), REQUEUE_MS),
          ])
        ).flat();
        let more: PublishedRunRef[];
        do woken.push(...(more = await timers.fireDue(1000, REQUEUE_MS)));
        while (more.length > 0);
        const mine = woken.filter((r) => runs.some((run) => run.runId === r.runId));
        expect(ids(mine)).toEqual(ids(runs));
        for (const r of runs) {
          const steps = await stepsOf(r.runId);
          expect(steps).toHaveLength(1);
          expect([null, { event: true }]).toContainEqual(steps[0]!.output);
          expect(await wakesOf(r.runId)).toEqual({ status: "QUEUED", wakes: 1 });
        }
      });

      it("wakes a run that is RUNNING without queueing it, so its next suspension resumes", async () => {
        const name = uniq("evt");
        const run = await claimedRun({});
        // Recorded by a suspension that resumed at once (a wake-up raced), so the run is running again with the wait.
        expect((await timers.suspend(run.runId, run.lease, run.wakes + 1, [waitAwait("w:0", name, null)], REQUEUE_MS)).kind).toBe(
          "resumed",
        );
        const claim = await store.claimRun(run.runId, uniq("exec"), 60_000);
        expect(await waits.resolve([{ runId: run.runId, stepKey: "w:0", outputJson: '{"id":"x"}' }], REQUEUE_MS)).toEqual([]);
        expect(await wakesOf(run.runId)).toEqual({ status: "RUNNING", wakes: 1 });
        expect((await timers.suspend(run.runId, claim!.lease, claim!.wakes, [waitAwait("w:0", name, null)], REQUEUE_MS)).kind).toBe(
          "resumed",
        );
      });
    });
  });
}

for (const backend of backends) waitSuite(backend);
