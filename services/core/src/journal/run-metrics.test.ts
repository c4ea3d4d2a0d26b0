import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { testBackends, type TestBackend, type TestDatabase, uniq } from "../testing/test-database.js";
import { ServiceMetrics } from "../runtime/metrics.js";
import { JournalStore } from "./journal-store.js";
import { migrate } from "./migrations.js";
import { TimerStore } from "./timer-store.js";
import type { EventInput, RunRules } from "./types.js";

// The journal store counts the runs its statements start and end, once
// each, by function and status, and reads the queue for its gauges; on
// Postgres and on PGlite.

function runMetricsSuite(backend: TestBackend): void {
  describe(`run metrics of the journal store on ${backend.name}`, () => {
    let db: TestDatabase;
    let metrics: ServiceMetrics;
    let store: JournalStore;

    beforeAll(async () => {
      db = await backend.open();
      await migrate(db.sql, db.migrateOptions);
      metrics = new ServiceMetrics();
      store = new JournalStore(db.sql, { metrics });
    });

    afterAll(async () => {
      await db?.drop();
    });

    async function count(name: string, labels: Record<string, string>): Promise<number> {
      const m = (await metrics.registry.getMetricsAsJSON()).find((x) => x.name === name);
      const want = JSON.stringify(Object.entries(labels).sort());
      return m?.values.find((v) => JSON.stringify(Object.entries(v.labels).sort()) === want)?.value ?? 0;
    }

    async function fn(runRules?: RunRules) {
      const appId = uniq("app");
      const trigger = uniq("start");
      await store.registerFunctions(appId, [
        { id: "fn", name: "Fn", eventTriggers: [trigger], config: {}, ...(runRules ? { runRules } : {}) },
        { id: "idle", name: "Idle", eventTriggers: [uniq("never")], config: {} },
      ]);
      return { appId, trigger };
    }

    async function runsOf(trigger: string, n: number): Promise<string[]> {
      const ids: string[] = [];
      for (let i = 0; i < n; i++) {
        const ev: EventInput = { id: uniq("ev"), name: trigger, dataJson: "{}", tsMs: Date.now(), receivedAtMs: Date.now() };
        await store.recordEvent(ev);
        const rows = await db.sql.query<{ id: string }>("SELECT id::text AS id FROM runs WHERE event_id = $1", [ev.id]);
        ids.push(...rows.map((r) => r.id));
      }
      return ids;
    }

    it("counts a first claim as a start, and each end once with its status", async () => {
      const { appId, trigger } = await fn();
      const at = (status?: string) => ({ app: appId, function: "fn", ...(status ? { status } : {}) });
      const [a, b, c, d] = (await runsOf(trigger, 4)) as [string, string, string, string];

      const depths = (await store.queueDepths()).filter((q) => q.appId === appId);
      expect(depths.map((q) => [q.functionId, q.depth])).toEqual([
        ["fn", 4],
        ["idle", 0],
      ]);
      expect(depths[0]!.oldestAgeSeconds).toBeGreaterThanOrEqual(0);
      expect(depths[1]!.oldestAgeSeconds).toBe(0);

      const [ca, cb] = await store.claimRuns([a, b], "exec-1", 60_000);
      const cc = await store.claimRun(c, "exec-1", 60_000);
      // A lease that lapses and a claim again: the same run, started once.
      await store.claimRun(d, "exec-1", 1);
      await new Promise((r) => setTimeout(r, 20));
      const cd = await store.claimRun(d, "exec-2", 60_000);
      expect(cd?.lease).toBe(2);
      expect(await count("stepwise_runs_started_total", at())).toBe(4);

      await store.completeRuns([{ runId: a, lease: ca!.lease, outputJson: "1" }]);
      await store.completeRun(a, ca!.lease, "1"); // Already ended: not counted again.
      await store.failRun(b, cb!.lease, { name: "Error", message: "no" });
      await store.cancelRun(c, "stop");
      await store.cancelRun(c, "stop again");
      await store.cancelRuns([d, a], "stop all");
      expect(await count("stepwise_runs_ended_total", at("COMPLETED"))).toBe(1);
      expect(await count("stepwise_runs_ended_total", at("FAILED"))).toBe(1);
      expect(await count("stepwise_runs_ended_total", at("CANCELLED"))).toBe(2);
      expect(cc?.lease).toBe(1);
      expect((await store.queueDepths()).filter((q) => q.appId === appId).map((q) => q.depth)).toEqual([0, 0]);
    });

    it("counts a run admission skipped as SKIPPED", async () => {
      const { appId, trigger } = await fn({ cancelOn: [], admission: { idempotency: "event.data.k" } });
      await runsOf(trigger, 3);
      const unkeyed = (await store.unkeyedRuns(10_000)).filter((r) => r.appId === appId);
      const outcomes = await store.admitRuns(unkeyed.map((r) => ({ runId: r.runId, idempotencyKey: `i-${appId}` })));
      expect(outcomes.filter((o) => o.kind === "skipped")).toHaveLength(2);
      expect(await count("stepwise_runs_ended_total", { app: appId, function: "fn", status: "SKIPPED" })).toBe(2);
    });

    it("a timer fired says how late it is", async () => {
      const timers = new TimerStore(db.sql, { channel: store.timerChannel });
      const { trigger } = await fn();
      const [id] = (await runsOf(trigger, 1)) as [string];
      const claimed = await store.claimRun(id, "exec-1", 60_000);
      const dueAtMs = Date.now() - 1_500;
      await timers.suspend(id, claimed!.lease, claimed!.wakes, [{ stepKey: "nap:0", stepId: "nap", kind: "sleep", dueAtMs }], 60_000);
      const fired = (await timers.fireDue(100, 60_000)).find((r) => r.runId === id);
      expect(fired?.lateMs).toBeGreaterThanOrEqual(1_400);
      expect(fired?.lateMs).toBeLessThan(60_000);
    });
  });
}

for (const backend of testBackends("rm")) runMetricsSuite(backend);
