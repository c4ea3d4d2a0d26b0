import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { testBackends, type TestBackend, type TestDatabase, uniq } from "../testing/test-database.js";
import type { GatherItem } from "./event-windows.js";
import { JournalStore } from "./journal-store.js";
import { migrate } from "./migrations.js";
import type { EventInput, EventWindowRule } from "./types.js";

// Event windows in the journal, on Postgres and on PGlite: the events of
// a function with debounce or batchEvents make no run of their own; each
// is gathered once into its key's window, and a due window becomes one
// run whose claim carries every event of the window.

function windowsSuite(backend: TestBackend): void {
  describe(`event windows on ${backend.name}`, () => {
    let db: TestDatabase;
    let store: JournalStore;

    beforeAll(async () => {
      db = await backend.open();
      await migrate(db.sql, db.migrateOptions);
      store = new JournalStore(db.sql);
    });

    afterAll(async () => {
      await db?.drop();
    });

    async function fn(window: EventWindowRule, condition?: string) {
      const appId = uniq("app");
      const trigger = uniq("ev");
      await store.registerFunctions(appId, [
        {
          id: "fn",
          name: "Fn",
          eventTriggers: condition ? [] : [trigger],
          conditionalTriggers: condition ? [{ event: trigger, condition }] : [],
          runRules: { cancelOn: [], window },
          config: {},
        },
      ]);
      return { appId, trigger };
    }

    // Each event received a millisecond after the one before: a run has its events in that order.
    let received = Date.now() - 1_000_000;

    /** Records an event as the scheduler does; returns it and what its statement said to gather. */
    async function record(trigger: string, data: Record<string, unknown> = {}) {
      const ev: EventInput = { id: uniq("e"), name: trigger, dataJson: JSON.stringify(data), tsMs: Date.now(), receivedAtMs: received++ };
      const recorded = await store.recordEventMatching(ev);
      expect(recorded.runs).toEqual([]);
      expect(recorded.conditional).toEqual([]);
      return { ev, recorded };
    }

    /** Records and gathers events under `key`, one statement each as the scheduler does. */
    async function gather(trigger: string, n: number, key = ""): Promise<string[]> {
      const ids: string[] = [];
      for (let i = 0; i < n; i++) {
        const { ev, recorded } = await record(trigger, { i });
        const items: GatherItem[] = recorded.gathering.map((t) => ({ appId: t.appId, functionId: t.functionId, eventId: ev.id, key, window: t.window }));
        expect(await store.gatherEvents(items)).toBe(1);
        ids.push(ev.id);
      }
      return ids;
    }

    async function makeDue(appId: string): Promise<void> {
      await db.sql.query("UPDATE event_windows SET due_at = now() - interval '1 millisecond' WHERE app_id = $1", [appId]);
    }

    async function closeAll(appId: string): Promise<string[]> {
      const made = await store.closeDueWindows(1000, 60_000);
      const rows = await db.sql.query<{ id: string }>("SELECT id::text AS id FROM runs WHERE app_id = $1 AND id = ANY($2::uuid[])", [appId, made.created]);
      expect(made.publish.map((r) => r.runId).sort()).toEqual(rows.map((r) => r.id).sort());
      return rows.map((r) => r.id);
    }

    async function eventsOf(runId: string) {
      const claimed = await store.claimRun(runId, "exec-1", 60_000);
      expect(claimed).not.toBeNull();
      return { event: claimed!.event.id, events: claimed!.events?.map((e) => e.id) };
    }

    it("debounce: the events of a key make one run once due, with the last event, and the claim carries all of them in order", async () => {
      const { appId, trigger } = await fn({ kind: "debounce", periodMs: 60_000, key: "" });
      const { recorded } = await record(trigger);
      expect(recorded.gathering).toEqual([
        { appId, functionId: "fn", conditions: null, window: { kind: "debounce", periodMs: 60_000, key: "" } },
      ]);
      const ids = await gather(trigger, 4);
      // Not due yet: the period runs from the last event.
      expect(await closeAll(appId)).toEqual([]);
      const due = await db.sql.query<{ ms: number }>(
        "SELECT (extract(epoch FROM due_at - now()) * 1000)::float8 AS ms, size FROM event_windows WHERE app_id = $1",
        [appId],
      );
      expect(Number(due[0]!.ms)).toBeGreaterThan(59_000);
      await makeDue(appId);
      const runs = await closeAll(appId);
      expect(runs).toHaveLength(1);
      expect(await eventsOf(runs[0]!)).toEqual({ event: ids[3], events: ids });
      // The window closed: the next event opens another.
      await gather(trigger, 1);
      expect(await db.sql.query("SELECT 1 FROM event_windows WHERE app_id = $1", [appId])).toHaveLength(1);
    });

    it("debounce with a timeout: a window is due no later than the timeout after its first event", async () => {
      const { appId, trigger } = await fn({ kind: "debounce", periodMs: 60_000, timeoutMs: 5_000, key: "" });
      await gather(trigger, 3);
      const rows = await db.sql.query<{ ms: number }>(
        "SELECT (extract(epoch FROM due_at - first_at) * 1000)::float8 AS ms FROM event_windows WHERE app_id = $1",
        [appId],
      );
      expect(Number(rows[0]!.ms)).toBe(5_000);
    });

    it("an event delivered again is gathered once", async () => {
      const { appId, trigger } = await fn({ kind: "debounce", periodMs: 60_000, key: "" });
      const { ev, recorded } = await record(trigger);
      const item: GatherItem = { appId, functionId: "fn", eventId: ev.id, key: "", window: recorded.gathering[0]!.window };
      expect(await store.gatherEvents([item])).toBe(1);
      const again = await store.recordEventMatching(ev);
      expect(again.gathering).toHaveLength(1);
      expect(await store.gatherEvents([item])).toBe(0);
      await makeDue(appId);
      const runs = await closeAll(appId);
      expect(await eventsOf(runs[0]!)).toEqual({ event: ev.id, events: [ev.id] });
      // Even after its window closed.
      expect(await store.gatherEvents([item])).toBe(0);
      expect(await db.sql.query("SELECT 1 FROM event_windows WHERE app_id = $1", [appId])).toHaveLength(0);
    });

    it("batchEvents: a full batch is due at once, with its first event; the rest waits for the timeout", async () => {
      const { appId, trigger } = await fn({ kind: "batch", maxSize: 3, timeoutMs: 60_000, key: "" });
      const ids = await gather(trigger, 7);
      const full = await closeAll(appId);
      expect(full).toHaveLength(2);
      const batches = await Promise.all(full.map(eventsOf));
      batches.sort((a, b) => ids.indexOf(a.event) - ids.indexOf(b.event));
      expect(batches).toEqual([
        { event: ids[0], events: ids.slice(0, 3) },
        { event: ids[3], events: ids.slice(3, 6) },
      ]);
      expect(await closeAll(appId)).toEqual([]);
      await makeDue(appId);
      const rest = await closeAll(appId);
      expect(await eventsOf(rest[0]!)).toEqual({ event: ids[6], events: [ids[6]] });
    });

    it("each key has its own window", async () => {
      const { appId, trigger } = await fn({ kind: "batch", maxSize: 2, timeoutMs: 60_000, key: "event.data.k" });
      const a = await gather(trigger, 1, "a");
      const b = await gather(trigger, 1, "b");
      expect(await closeAll(appId)).toEqual([]);
      const a2 = await gather(trigger, 1, "a");
      const runs = await closeAll(appId);
      expect(runs).toHaveLength(1);
      expect(await eventsOf(runs[0]!)).toEqual({ event: a[0], events: [a[0], a2[0]] });
      await makeDue(appId);
      const rest = await closeAll(appId);
      expect(await eventsOf(rest[0]!)).toEqual({ event: b[0], events: b });
    });

    it("a trigger with a condition is returned with it, for the scheduler to evaluate", async () => {
      const { appId, trigger } = await fn({ kind: "batch", maxSize: 2, timeoutMs: 1_000, key: "" }, "event.data.go == true");
      const { recorded } = await record(trigger, { go: true });
      expect(recorded.gathering).toEqual([
        { appId, functionId: "fn", conditions: ["event.data.go == true"], window: { kind: "batch", maxSize: 2, timeoutMs: 1_000, key: "" } },
      ]);
    });

    it("a rerun of a batched run gets the same events", async () => {
      const { appId, trigger } = await fn({ kind: "batch", maxSize: 2, timeoutMs: 60_000, key: "" });
      const ids = await gather(trigger, 2);
      const [runId] = await closeAll(appId);
      const rerun = await store.deriveRun(runId!, undefined, 60_000);
      expect(rerun.kind).toBe("created");
      if (rerun.kind !== "created") return;
      expect(await eventsOf(rerun.run.runId)).toEqual({ event: ids[0], events: ids });
    });

    it("a run has its events in the order received, whatever the order they were gathered in", async () => {
      const { appId, trigger } = await fn({ kind: "debounce", periodMs: 60_000, key: "" });
      const events = [await record(trigger), await record(trigger), await record(trigger)];
      for (const { ev, recorded } of [events[2]!, events[0]!, events[1]!]) {
        await store.gatherEvents([{ appId, functionId: "fn", eventId: ev.id, key: "", window: recorded.gathering[0]!.window }]);
      }
      await makeDue(appId);
      const [runId] = await closeAll(appId);
      const ids = events.map((e) => e.ev.id);
      expect(await eventsOf(runId!)).toEqual({ event: ids[2], events: ids });
    });

    it("events gathered at once for one key fill batches of maxSize, each event in exactly one", async () => {
      const { appId, trigger } = await fn({ kind: "batch", maxSize: 5, timeoutMs: 60_000, key: "" });
      const events = await Promise.all(Array.from({ length: 40 }, (_, i) => record(trigger, { i })));
      const counts = await Promise.all(
        events.map(({ ev, recorded }) =>
          store.gatherEvents([{ appId, functionId: "fn", eventId: ev.id, key: "", window: recorded.gathering[0]!.window }]),
        ),
      );
      expect(counts.every((n) => n === 1)).toBe(true);
      await makeDue(appId);
      const runs = await closeAll(appId);
      const batches = await Promise.all(runs.map(eventsOf));
      // A full batch is closed to the events that follow: 8 batches of 5, on Postgres too, where the statements race.
      expect(batches.map((b) => b.events!.length)).toEqual([5, 5, 5, 5, 5, 5, 5, 5]);
      expect(batches.flatMap((b) => b.events!).sort()).toEqual(events.map((e) => e.ev.id).sort());
    });
  });
}

for (const backend of testBackends("ew")) windowsSuite(backend);
