import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { testBackends, type TestDatabase, uniq } from "../testing/test-database.js";
import { JournalStore } from "./journal-store.js";
import { migrate } from "./migrations.js";
import type { EventInput } from "./types.js";

const DAY = 86_400_000;

for (const backend of testBackends("ret")) {
  describe(`retention on ${backend.name}`, () => {
    let db: TestDatabase;
    let store: JournalStore;
    const app = uniq("app");
    const trigger = uniq("order.placed");

    beforeAll(async () => {
      db = await backend.open();
      await migrate(db.sql, db.migrateOptions);
      store = new JournalStore(db.sql);
      await store.registerFunctions(app, [{ id: "fn", name: "Fn", eventTriggers: [trigger], config: {} }]);
    });
    afterAll(() => db.drop());

    const event = (name = trigger): EventInput => ({ id: uniq("ev"), name, dataJson: "{}", tsMs: Date.now(), receivedAtMs: Date.now() });

    /** A run of a new event, claimed, with one journaled step; completed when `end`. */
    async function run(end: boolean): Promise<{ runId: string; eventId: string }> {
      const ev = event();
      const [ref] = await store.recordEvent(ev);
      const claim = (await store.claimRun(ref!.runId, "exec", 60_000))!;
      const now = Date.now();
      await store.journalStep({ runId: ref!.runId, lease: claim.lease, stepKey: "a:0", stepId: "a", attempt: 1, startedAtMs: now, endedAtMs: now, outputJson: "1" });
      if (end) expect(await store.completeRun(ref!.runId, claim.lease, '"done"')).not.toBeNull();
      return { runId: ref!.runId, eventId: ev.id };
    }

    /** Moves a run's end, and its event's storage, `ms` into the past. */
    async function age(r: { runId: string; eventId: string }, ms: number): Promise<void> {
      await db.sql.query("UPDATE runs SET ended_at = ended_at - $2 * interval '1 millisecond', created_at = created_at - $2 * interval '1 millisecond' WHERE id = $1", [r.runId, ms]);
      await db.sql.query("UPDATE events SET stored_at = stored_at - $2 * interval '1 millisecond' WHERE id = $1", [r.eventId, ms]);
    }

    const count = async (table: string, column: string, value: string) =>
      Number((await db.sql.query<{ n: string | number }>(`SELECT count(*) AS n FROM ${table} WHERE ${column} = $1`, [value]))[0]!.n);

    it("deletes runs that ended before the retention with their steps, then their events; keeps the rest", async () => {
      const old = await run(true);
      const recent = await run(true);
      const unfinished = await run(false);
      await age(old, 2 * DAY);
      await age(unfinished, 2 * DAY); // created long ago, still RUNNING: never touched
      const lonely = event(uniq("nobody.listens"));
      await store.recordEvent(lonely);
      await db.sql.query("UPDATE events SET stored_at = stored_at - interval '2 days' WHERE id = $1", [lonely.id]);
      const fresh = event(uniq("nobody.listens"));
      await store.recordEvent(fresh);

      expect(await count("steps", "run_id", old.runId)).toBe(1);
      expect(await store.deleteEndedRuns(DAY, 500)).toBe(1);
      expect(await store.getRun(old.runId)).toBeNull();
      expect(await count("steps", "run_id", old.runId)).toBe(0);
      expect(await count("step_attempts", "run_id", old.runId)).toBe(0);
      expect((await store.getRun(recent.runId))?.status).toBe("COMPLETED");
      expect((await store.getRun(unfinished.runId))?.status).toBe("RUNNING");
      expect(await count("steps", "run_id", unfinished.runId)).toBe(1);

      expect(await store.deleteUnreferencedEvents(DAY, 500)).toBe(2);
      expect(await count("events", "id", old.eventId)).toBe(0);
      expect(await count("events", "id", lonely.id)).toBe(0);
      // Still referred to by a run, or too young.
      for (const id of [unfinished.eventId, recent.eventId, fresh.id]) expect(await count("events", "id", id), id).toBe(1);
      expect(await store.deleteEndedRuns(DAY, 500)).toBe(0);
      expect(await store.deleteUnreferencedEvents(DAY, 500)).toBe(0);
    });

    it("deletes at most a batch per call, oldest end first", async () => {
      const runs = [await run(true), await run(true), await run(true)];
      for (const [i, r] of runs.entries()) await age(r, (3 + i) * DAY);
      expect(await store.deleteEndedRuns(DAY, 2)).toBe(2);
      // The youngest of the three is left.
      expect(await store.getRun(runs[0]!.runId)).not.toBeNull();
      expect(await store.getRun(runs[2]!.runId)).toBeNull();
      expect(await store.deleteEndedRuns(DAY, 2)).toBe(1);
    });

    it("keeps a window's events while a run of the window is left, and lets them go with the last one", async () => {
      const first = await run(true);
      const rerun = await run(true);
      const window = randomUUID();
      const gathered = event(uniq("gathered"));
      await store.recordEvent(gathered);
      await db.sql.query("INSERT INTO window_events (app_id, function_id, event_id, window_id) VALUES ($1, 'fn', $2, $3)", [app, gathered.id, window]);
      await db.sql.query("UPDATE runs SET window_id = $2 WHERE id = ANY($1::uuid[])", [[first.runId, rerun.runId], window]);
      await db.sql.query("UPDATE events SET stored_at = stored_at - interval '9 days' WHERE id = $1", [gathered.id]);
      await age(first, 9 * DAY);
      expect(await store.deleteEndedRuns(DAY, 500)).toBe(1);
      // The rerun of the window is still there: the window's events stay.
      expect(await count("window_events", "event_id", gathered.id)).toBe(1);
      expect(await store.deleteUnreferencedEvents(DAY, 500)).toBeGreaterThanOrEqual(1);
      expect(await count("events", "id", gathered.id)).toBe(1);
      await age(rerun, 9 * DAY);
      expect(await store.deleteEndedRuns(DAY, 500)).toBe(1);
      expect(await count("window_events", "event_id", gathered.id)).toBe(0);
      await store.deleteUnreferencedEvents(DAY, 500);
      expect(await count("events", "id", gathered.id)).toBe(0);
    });
  });
}
