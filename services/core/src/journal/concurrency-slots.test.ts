import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { testBackends, type TestBackend, type TestDatabase, uniq } from "../testing/test-database.js";
import { JournalStore } from "./journal-store.js";
import { migrate } from "./migrations.js";
import { TimerStore } from "./timer-store.js";
import type { AdmissionKeys } from "./concurrency-slots.js";
import type { EventInput, RunRules } from "./types.js";

// Concurrency slots in the journal, on Postgres and on PGlite: new runs of
// a limited function wait for their keys, then for a slot; a grant never
// gives a key more slots than its limit, even when schedulers grant at
// once; a run that stops running gives its slot back.

function slotsSuite(backend: TestBackend): void {
  describe(`concurrency slots on ${backend.name}`, () => {
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

    async function fn(runRules: RunRules) {
      const appId = uniq("app");
      const trigger = uniq("start");
      await store.registerFunctions(appId, [{ id: "fn", name: "Fn", eventTriggers: [trigger], runRules, config: {} }]);
      return { appId, trigger };
    }

    async function runsOf(trigger: string, n: number): Promise<string[]> {
      const ids: string[] = [];
      for (let i = 0; i < n; i++) {
        const ev: EventInput = { id: uniq("ev"), name: trigger, dataJson: "{}", tsMs: Date.now(), receivedAtMs: Date.now() };
        // A run with flow control is not among those to publish: the slot keeper publishes it.
        expect(await store.recordEvent(ev)).toEqual([]);
        const rows = await db.sql.query<{ id: string }>("SELECT id::text AS id FROM runs WHERE event_id = $1", [ev.id]);
        ids.push(...rows.map((r) => r.id));
      }
      return ids;
    }

    async function slotOf(runId: string): Promise<string | null> {
      const rows = await db.sql.query<{ slot: string | null }>("SELECT slot FROM runs WHERE id = $1", [runId]);
      return rows[0]?.slot ?? null;
    }

    /** Keys the unkeyed runs of `appId` with one key each, as the slot keeper would. */
    async function keyAll(appId: string, key: (runId: string, i: number) => string[], limits: Record<string, number>) {
      const unkeyed = (await store.unkeyedRuns(10_000)).filter((r) => r.appId === appId);
      await store.keyRuns(
        unkeyed.map((r, i) => ({ runId: r.runId, keys: key(r.runId, i), queuedAtMs: r.createdAtMs })),
        new Map(Object.entries(limits)),
      );
      return unkeyed;
    }

    it("a new run of a limited function waits for its keys, then for a slot, and is claimable only once granted", async () => {
      const { appId, trigger } = await fn({ cancelOn: [], concurrency: [{ limit: 2, key: "event.data.k", scope: "function" }] });
      const [runId] = await runsOf(trigger, 1);
      expect(await slotOf(runId!)).toBe("unkeyed");
      expect(await store.claimRun(runId!, "exec-1", 60_000)).toBeNull();
      const unkeyed = (await store.unkeyedRuns(10_000)).filter((r) => r.appId === appId);
      expect(unkeyed.map((r) => r.runId)).toEqual([runId]);
      expect(unkeyed[0]!.flow).toEqual({ concurrency: [{ limit: 2, key: "event.data.k", scope: "function" }], throttle: null, priority: null, admission: null });
      await store.keyRuns([{ runId: runId!, keys: [`k-${appId}`], queuedAtMs: unkeyed[0]!.createdAtMs }], new Map([[`k-${appId}`, 2]]));
      expect(await slotOf(runId!)).toBe("waiting");
      expect(await store.claimRun(runId!, "exec-1", 60_000)).toBeNull();
      const { granted } = await store.grantSlots(100, 60_000);
      expect(granted.map((g) => g.runId)).toContain(runId);
      expect(await slotOf(runId!)).toBe("granted");
      expect(await store.claimRun(runId!, "exec-1", 60_000)).not.toBeNull();
    });

    it("a key gets at most its limit of slots; a run that ends or sleeps gives its slot back, and a woken one waits again", async () => {
      const { appId, trigger } = await fn({ cancelOn: [], concurrency: [{ limit: 2, key: "", scope: "function" }] });
      const ids = await runsOf(trigger, 5);
      const key = `one-${appId}`;
      await keyAll(appId, () => [key], { [key]: 2 });
      const first = (await store.grantSlots(100, 60_000)).granted.filter((g) => ids.includes(g.runId));
      expect(first).toHaveLength(2);
      // Oldest first.
      expect(first.map((g) => g.runId).sort()).toEqual(ids.slice(0, 2).sort());
      expect((await store.grantSlots(100, 60_000)).granted.filter((g) => ids.includes(g.runId))).toEqual([]);
      // One completes, one sleeps: two more slots.
      const a = await store.claimRun(ids[0]!, "exec-1", 60_000);
      const b = await store.claimRun(ids[1]!, "exec-1", 60_000);
      expect(await store.completeRun(ids[0]!, a!.lease, "1")).not.toBeNull();
      expect(
        await timers.suspend(ids[1]!, b!.lease, b!.wakes, [{ stepKey: "nap:0", stepId: "nap", kind: "sleep", dueAtMs: Date.now() - 1 }], 60_000),
      ).toEqual({ kind: "waiting", hasWaits: false });
      expect(await slotOf(ids[0]!)).toBe("idle");
      expect(await slotOf(ids[1]!)).toBe("idle");
      const second = (await store.grantSlots(100, 60_000)).granted.filter((g) => ids.includes(g.runId));
      expect(second.map((g) => g.runId).sort()).toEqual(ids.slice(2, 4).sort());
      // The sleeper wakes: it waits for a slot again, by its age ahead of the fifth run.
      const woken = (await timers.fireDue(100, 60_000)).filter((r) => r.runId === ids[1]);
      expect(woken).toHaveLength(1);
      expect(await slotOf(ids[1]!)).toBe("waiting");
      expect(await store.claimRun(ids[1]!, "exec-1", 60_000)).toBeNull();
      expect((await store.grantSlots(100, 60_000)).granted.filter((g) => ids.includes(g.runId))).toEqual([]);
      // A cancel gives a granted slot back too.
      await store.cancelRuns([ids[2]!], "stop");
      const third = (await store.grantSlots(100, 60_000)).granted.filter((g) => ids.includes(g.runId));
      expect(third.map((g) => g.runId)).toEqual([ids[1]]);
      expect(await slotOf(ids[4]!)).toBe("waiting");
    });

    it("a run with two keys needs room in both", async () => {
      const { appId, trigger } = await fn({
        cancelOn: [],
        concurrency: [
          { limit: 3, key: "event.data.customer", scope: "function" },
          { limit: 1, key: "", scope: "app" },
        ],
      });
      const ids = await runsOf(trigger, 3);
      const [k1, k2] = [`c-${appId}`, `all-${appId}`];
      await keyAll(appId, () => [k1, k2], { [k1]: 3, [k2]: 1 });
      expect((await store.grantSlots(100, 60_000)).granted.filter((g) => ids.includes(g.runId))).toHaveLength(1);
      expect((await store.grantSlots(100, 60_000)).granted.filter((g) => ids.includes(g.runId))).toHaveLength(0);
    });

    it("schedulers granting at once never give a key more than its limit", async () => {
      const { appId, trigger } = await fn({ cancelOn: [], concurrency: [{ limit: 3, key: "event.data.k", scope: "function" }] });
      const ids = await runsOf(trigger, 40);
      await keyAll(appId, (_id, i) => [`k${i % 4}-${appId}`], Object.fromEntries([0, 1, 2, 3].map((i) => [`k${i}-${appId}`, 3])));
      const rounds = await Promise.all(Array.from({ length: 6 }, () => store.grantSlots(100, 60_000)));
      const granted = rounds.flatMap((r) => r.granted).filter((g) => ids.includes(g.runId));
      expect(new Set(granted.map((g) => g.runId)).size).toBe(granted.length);
      const held = await db.sql.query<{ key: string; n: number | string }>(
        "SELECT ckey1 AS key, count(*) AS n FROM runs WHERE id = ANY($1::uuid[]) AND slot = 'granted' GROUP BY ckey1",
        [ids],
      );
      for (const h of held) expect(Number(h.n)).toBeLessThanOrEqual(3);
      // Whatever one round skipped (a key locked by another), a later round grants: 4 keys × 3.
      await store.grantSlots(100, 60_000);
      const total = await db.sql.query<{ n: number | string }>(
        "SELECT count(*) AS n FROM runs WHERE id = ANY($1::uuid[]) AND slot = 'granted'",
        [ids],
      );
      expect(Number(total[0]!.n)).toBe(12);
    });

    it("a throttle lets limit + burst runs start at once, then one per period / limit, and says when the next may", async () => {
      const throttle = { limit: 2, periodMs: 1_000, burst: 1, key: "" };
      const { appId, trigger } = await fn({ cancelOn: [], throttle });
      const ids = await runsOf(trigger, 6);
      const tkey = `t-${appId}`;
      const unkeyed = (await store.unkeyedRuns(10_000)).filter((r) => r.appId === appId);
      expect(unkeyed[0]!.flow.throttle).toEqual(throttle);
      await store.keyRuns(
        unkeyed.map((r) => ({ runId: r.runId, keys: [], throttleKey: tkey, queuedAtMs: r.createdAtMs })),
        new Map(),
        new Map([[tkey, { emissionMs: 500, toleranceMs: 1_000 }]]),
      );
      const first = await store.grantSlots(100, 60_000);
      expect(first.granted.filter((g) => ids.includes(g.runId)).map((g) => g.runId)).toEqual(ids.slice(0, 3));
      expect(first.retryInMs).toBeGreaterThan(300);
      expect(first.retryInMs).toBeLessThanOrEqual(500);
      expect((await store.grantSlots(100, 60_000)).granted.filter((g) => ids.includes(g.runId))).toEqual([]);
      await new Promise((r) => setTimeout(r, first.retryInMs! + 20));
      const second = await store.grantSlots(100, 60_000);
      expect(second.granted.filter((g) => ids.includes(g.runId)).map((g) => g.runId)).toEqual([ids[3]]);
      // A throttle limits first starts: a run of it that sleeps and wakes goes on at once.
      const claim = await store.claimRun(ids[0]!, "exec-1", 60_000);
      await timers.suspend(ids[0]!, claim!.lease, claim!.wakes, [{ stepKey: "nap:0", stepId: "nap", kind: "sleep", dueAtMs: Date.now() - 1 }], 60_000);
      expect((await timers.fireDue(100, 60_000)).map((r) => r.runId)).toContain(ids[0]);
      expect(await slotOf(ids[0]!)).toBe("granted");
      expect(await store.claimRun(ids[0]!, "exec-1", 60_000)).not.toBeNull();
    });

    it("runs start in queue order: a run moved ahead by its priority goes before older ones", async () => {
      const { appId, trigger } = await fn({ cancelOn: [], concurrency: [{ limit: 1, key: "", scope: "function" }], priority: "event.data.p" });
      const ids = await runsOf(trigger, 4);
      const key = `p-${appId}`;
      const unkeyed = (await store.unkeyedRuns(10_000)).filter((r) => r.appId === appId);
      expect(unkeyed[0]!.flow.priority).toBe("event.data.p");
      // The last one created is a minute ahead.
      await store.keyRuns(
        unkeyed.map((r) => ({ runId: r.runId, keys: [key], queuedAtMs: r.createdAtMs - (r.runId === ids[3] ? 60_000 : 0) })),
        new Map([[key, 1]]),
      );
      const order: string[] = [];
      for (let i = 0; i < 4; i++) {
        const [g] = (await store.grantSlots(100, 60_000)).granted.filter((x) => ids.includes(x.runId));
        order.push(g!.runId);
        const c = await store.claimRun(g!.runId, "exec-1", 60_000);
        await store.completeRun(g!.runId, c!.lease, "1");
      }
      // Runs created in one millisecond (one statement) have no order among them.
      expect(order[0]).toBe(ids[3]);
      expect(order.slice(1).sort()).toEqual(ids.slice(0, 3).sort());
    });

    /** Admits the unkeyed runs of `appId` with these keys each, then keys the admitted ones with none. */
    async function admitAll(appId: string, keys: (runId: string, i: number) => Omit<AdmissionKeys, "runId">) {
      const unkeyed = (await store.unkeyedRuns(10_000)).filter((r) => r.appId === appId);
      const outcomes = await store.admitRuns(unkeyed.map((r, i) => ({ runId: r.runId, ...keys(r.runId, i) })));
      const admitted = outcomes.filter((o) => o.kind === "admitted").map((o) => o.runId);
      await store.keyRuns(
        unkeyed.filter((r) => admitted.includes(r.runId)).map((r) => ({ runId: r.runId, keys: [], queuedAtMs: r.createdAtMs })),
        new Map(),
      );
      return outcomes;
    }

    async function statusOf(runId: string) {
      return (await store.getRun(runId))?.status;
    }

    it("an idempotency key lets one run start; the others end SKIPPED, saying which run took it", async () => {
      const { appId, trigger } = await fn({ cancelOn: [], admission: { idempotency: "event.data.k" } });
      const ids = await runsOf(trigger, 3);
      const outcomes = await admitAll(appId, () => ({ idempotencyKey: `i-${appId}` }));
      // The first decided on takes the key (runs of one millisecond come in any order).
      expect(outcomes.map((o) => o.kind)).toEqual(["admitted", "skipped", "skipped"]);
      const taker = outcomes[0]!.runId;
      const [s1, s2] = ids.filter((id) => id !== taker);
      expect(outcomes[1]).toMatchObject({ kind: "skipped", reason: `idempotency: run ${taker} took the key in the last 24 hours` });
      expect(await statusOf(s1!)).toBe("SKIPPED");
      expect((await store.getRun(s2!))?.error).toMatchObject({ name: "RunSkipped" });
      expect(await slotOf(taker)).toBeNull();
      expect(await store.claimRun(taker, "exec-1", 60_000)).not.toBeNull();
      // Another key is another run.
      const [other] = await runsOf(trigger, 1);
      expect((await admitAll(appId, () => ({ idempotencyKey: `j-${appId}` }))).map((o) => [o.runId, o.kind])).toEqual([[other, "admitted"]]);
    });

    it("a rate limit lets `limit` runs start per window and skips the rest, without taking their idempotency keys", async () => {
      const { appId, trigger } = await fn({ cancelOn: [], admission: { rateLimit: { limit: 2, periodMs: 60_000, key: "" } } });
      await runsOf(trigger, 5);
      const outcomes = await admitAll(appId, (_id, i) => ({
        rateKey: { key: `r-${appId}`, limit: 2, periodMs: 60_000 },
        idempotencyKey: `ri-${appId}-${i}`,
      }));
      expect(outcomes.map((o) => o.kind)).toEqual(["admitted", "admitted", "skipped", "skipped", "skipped"]);
      expect(outcomes[2]).toMatchObject({ reason: expect.stringMatching(/^rateLimit: 2 runs already started in the window that began at /) as unknown });
      const keys = await db.sql.query<{ key: string }>("SELECT key FROM idempotency_keys WHERE key LIKE $1 ORDER BY key", [`ri-${appId}-%`]);
      expect(keys.map((k) => k.key)).toEqual([`ri-${appId}-0`, `ri-${appId}-1`]);
    });

    it("a singleton skips a new run while one of its key has not ended, or cancels the old one", async () => {
      const skip = await fn({ cancelOn: [], admission: { singleton: { key: "", mode: "skip" } } });
      const [first] = await runsOf(skip.trigger, 1);
      await admitAll(skip.appId, () => ({ singletonKey: { key: `s-${skip.appId}`, mode: "skip" } }));
      const [second] = await runsOf(skip.trigger, 1);
      const [o] = await admitAll(skip.appId, () => ({ singletonKey: { key: `s-${skip.appId}`, mode: "skip" } }));
      expect(o).toMatchObject({ runId: second, kind: "skipped", reason: `singleton: run ${first} of the same key has not ended` });
      const c = await store.claimRun(first!, "exec-1", 60_000);
      await store.completeRun(first!, c!.lease, "1");
      const [third] = await runsOf(skip.trigger, 1);
      expect((await admitAll(skip.appId, () => ({ singletonKey: { key: `s-${skip.appId}`, mode: "skip" } })))[0]).toMatchObject({
        runId: third,
        kind: "admitted",
        toCancel: [],
      });

      const cancel = await fn({ cancelOn: [], admission: { singleton: { key: "", mode: "cancel" } } });
      const [old] = await runsOf(cancel.trigger, 1);
      await admitAll(cancel.appId, () => ({ singletonKey: { key: `c-${cancel.appId}`, mode: "cancel" } }));
      const [fresh] = await runsOf(cancel.trigger, 1);
      expect((await admitAll(cancel.appId, () => ({ singletonKey: { key: `c-${cancel.appId}`, mode: "cancel" } })))[0]).toEqual({
        runId: fresh,
        kind: "admitted",
        toCancel: [old],
      });
      // The cancel is owed with the admission, whoever pays it and however late: once.
      const status = async (id: string) => (await db.sql.query<{ status: string }>("SELECT status FROM runs WHERE id = $1", [id]))[0]?.status;
      expect(await status(old!)).toBe("QUEUED");
      const paid = (await store.cancelReplacedSingletons(100)).filter((c) => c.runId === old);
      expect(paid).toHaveLength(1);
      expect(paid[0]!.outcome.kind).toBe("cancelled");
      expect(await status(old!)).toBe("CANCELLED");
      expect((await store.getRun(old!))?.error?.message).toBe(`singleton: replaced by run ${fresh}`);
      expect((await store.cancelReplacedSingletons(100)).filter((c) => c.runId === old)).toEqual([]);
    });

    it("a run whose function has no limits left is keyed with none and claimable at once", async () => {
      const { appId, trigger } = await fn({ cancelOn: [], concurrency: [{ limit: 1, key: "", scope: "function" }] });
      const [runId] = await runsOf(trigger, 1);
      await keyAll(appId, () => [], {});
      expect(await slotOf(runId!)).toBeNull();
      expect(await store.claimRun(runId!, "exec-1", 60_000)).not.toBeNull();
    });
  });
}

for (const backend of testBackends("cs")) slotsSuite(backend);
