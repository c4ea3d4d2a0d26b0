import { randomBytes, randomUUID } from "node:crypto";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createPgliteSql,
  createPgSql,
  JournalStore,
  migrate,
  quoteIdent,
  TimerStore,
  WaitStore,
  type EventInput,
  type Sql,
  MemoryBus,
} from "@stepwise/core";
import { EventBatches } from "./event-batches.js";

const DATABASE_URL = process.env["TEST_DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/test";

// The scheduler's batched statements must give each event exactly what the
// one-event statements give it: same runs, same conditional triggers, same
// wait candidates. Run on Postgres and on PGlite.
for (const backend of ["Postgres", "PGlite"] as const) {
  describe(`EventBatches on ${backend}`, () => {
    let sql: Sql;
    let schema = "";
    let store: JournalStore;
    let waits: WaitStore;
    let timers: TimerStore;

    beforeAll(async () => {
      if (backend === "Postgres") {
        schema = `eb_${randomBytes(6).toString("hex")}`;
        sql = createPgSql({ url: DATABASE_URL, schema, max: 4 });
        await migrate(sql, { schema });
      } else {
        sql = await createPgliteSql();
        await migrate(sql);
      }
      store = new JournalStore(sql);
      waits = new WaitStore(sql);
      timers = new TimerStore(sql);
      await store.registerFunctions("app", [
        { id: "always", name: "always", eventTriggers: ["order.placed"], config: {} },
        {
          id: "big",
          name: "big",
          eventTriggers: [],
          conditionalTriggers: [{ event: "order.placed", condition: "event.data.total > 100" }],
          config: {},
        },
        { id: "waiter", name: "waiter", eventTriggers: ["start"], config: {} },
      ]);
    });

    afterAll(async () => {
      await sql.close();
      if (schema) {
        const admin = new pg.Client({ connectionString: DATABASE_URL });
        await admin.connect();
        await admin.query(`DROP SCHEMA IF EXISTS ${quoteIdent(schema)} CASCADE`);
        await admin.end();
      }
    });

    const event = (name: string, data: object, id = randomUUID()): EventInput => ({
      id,
      name,
      dataJson: JSON.stringify(data),
      tsMs: Date.now(),
      receivedAtMs: Date.now(),
    });

    it("records concurrent events in shared statements with the same outcome as one by one", async () => {
      const batches = new EventBatches(store, waits, new MemoryBus());
      const events = Array.from({ length: 30 }, (_, i) => event("order.placed", { total: i * 10 }));
      const nameless = event("nobody.listens", {});
      const recorded = await Promise.all([...events, nameless, events[0]!].map((e) => batches.record(e)));
      for (const [i, r] of recorded.slice(0, 30).entries()) {
        expect(r.runs.map((x) => x.functionId)).toEqual(["always"]);
        expect(r.conditional).toEqual([{ appId: "app", functionId: "big", conditions: ["event.data.total > 100"] }]);
        expect(r.storedAtMs).toBeGreaterThan(Date.now() - 60_000);
        expect(events[i]!.id).toBeDefined();
      }
      expect(recorded[30]).toMatchObject({ runs: [], conditional: [] });
      // The same id twice in one batch: one event, one run, both callers told about it.
      expect(recorded[31]!.runs.map((r) => r.runId)).toEqual(recorded[0]!.runs.map((r) => r.runId));
      const [{ n }] = (await sql.query<{ n: number }>("SELECT count(*)::int AS n FROM runs WHERE function_id = 'always'")) as [{ n: number }];
      expect(n).toBe(30);
      // Recording again (a redelivery) creates nothing new and returns the runs still QUEUED.
      const again = await store.recordEventsMatching([events[1]!, events[2]!]);
      expect(again.map((r) => r.runs.map((x) => x.runId))).toEqual([
        recorded[1]!.runs.map((x) => x.runId),
        recorded[2]!.runs.map((x) => x.runId),
      ]);
    });

    it("looks up the waits of concurrent events in shared statements, by index and by full scan", async () => {
      const batches = new EventBatches(store, waits, new MemoryBus());
      const keys = ["k1", "k2", "k3"];
      const runIds: string[] = [];
      for (const key of keys) {
        const [run] = await store.recordEvent(event("start", { key }));
        const claimed = (await store.claimRun(run!.runId, "exec", 60_000))!;
        runIds.push(claimed.runId);
        const outcome = await timers.suspend(claimed.runId, claimed.lease, claimed.wakes, [
          {
            stepKey: "w:0",
            stepId: "w",
            kind: "wait",
            dueAtMs: Date.now() + 60_000,
            event: "reply",
            condition: "event.data.key == async.data.key",
            equality: { eventPath: ["data", "key"], asyncPath: ["data", "key"] },
          },
          {
            stepKey: "any:0",
            stepId: "any",
            kind: "wait",
            dueAtMs: Date.now() + 60_000,
            event: "reply",
            condition: null,
            equality: undefined,
          },
        ], 60_000);
        expect(outcome.kind).toBe("waiting");
      }
      const replies = keys.map((key) => event("reply", { key }));
      const stored = await Promise.all(replies.map((r) => batches.record(r)));
      const found = await Promise.all(replies.map(async (r, i) => (await batches.matches({ event: r, storedAtMs: stored[i]!.storedAtMs })).waits));
      for (const [i, list] of found.entries()) {
        const single = await waits.candidates(replies[i]!, stored[i]!.storedAtMs);
        const norm = (l: typeof list) => l.map((c) => `${c.runId}/${c.stepKey}`).sort();
        expect(norm(list)).toEqual(norm(single));
        // Its own run's keyed wait, and every run's unkeyed wait.
        expect(norm(list)).toEqual([`${runIds[i]}/w:0`, ...runIds.map((id) => `${id}/any:0`)].sort());
      }
    });
  });
}
