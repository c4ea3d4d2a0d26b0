import { register as globalRegistry } from "prom-client";
import { afterEach, describe, expect, it } from "vitest";
import type { Row, Sql, SqlTx } from "../journal/sql.js";
import { timedSql } from "../journal/sql.js";
import { type QueuedRuns, ServiceMetrics } from "./metrics.js";
import { type RunningServer, serveConnect } from "./server.js";

/** The value of a sample, 0 when the series is not there. */
async function value(m: ServiceMetrics, name: string, labels: Record<string, string> = {}): Promise<number> {
  const metric = (await m.registry.getMetricsAsJSON()).find((x) => x.name === name.replace(/_(count|sum)$/, ""));
  if (!metric) throw new Error(`no metric ${name}`);
  const want = JSON.stringify(Object.entries(labels).sort());
  const v = (metric.values as Array<{ metricName?: string; labels: Record<string, string | number>; value: number }>).find(
    (s) => (s.metricName ?? metric.name) === name && JSON.stringify(Object.entries(s.labels).sort()) === want,
  );
  return v?.value ?? 0;
}

async function names(m: ServiceMetrics): Promise<string[]> {
  return (await m.registry.getMetricsAsJSON()).map((x) => x.name).sort();
}

describe("ServiceMetrics", () => {
  it("registers the shared metrics at once and a service's when it asks, in a registry of its own", async () => {
    const m = new ServiceMetrics();
    expect(await names(m)).toEqual([
      "stepwise_bus_publish_duration_seconds",
      "stepwise_group_commit_batch_size",
      "stepwise_journal_statement_duration_seconds",
      "stepwise_runs_ended_total",
      "stepwise_runs_started_total",
    ]);
    expect(m.ingest).toBe(m.ingest);
    void m.scheduler;
    void m.executor;
    expect(await names(m)).toEqual(
      [
        "stepwise_bus_publish_duration_seconds",
        "stepwise_events_received_total",
        "stepwise_events_rejected_total",
        "stepwise_group_commit_batch_size",
        "stepwise_journal_statement_duration_seconds",
        "stepwise_queue_depth",
        "stepwise_queue_oldest_age_seconds",
        "stepwise_runs_ended_total",
        "stepwise_runs_started_total",
        "stepwise_step_attempts_total",
        "stepwise_step_duration_seconds",
        "stepwise_timer_lateness_seconds",
        "stepwise_worker_sessions",
        "stepwise_worker_slots",
        "stepwise_worker_slots_used",
      ].sort(),
    );
    // Two of them do not meet, and prom-client's global registry holds none.
    const other = new ServiceMetrics();
    m.runs.runStarted("a", "f");
    expect(await value(m, "stepwise_runs_started_total", { app: "a", function: "f" })).toBe(1);
    expect(await value(other, "stepwise_runs_started_total", { app: "a", function: "f" })).toBe(0);
    expect(globalRegistry.getMetricsAsArray().filter((x) => x.name.startsWith("stepwise_"))).toEqual([]);
  });

  it("counts runs, steps and events by their labels", async () => {
    const m = new ServiceMetrics();
    m.runs.runStarted("shop", "order");
    m.runs.runStarted("shop", "order");
    m.runs.runEnded("shop", "order", "COMPLETED");
    m.runs.runEnded("shop", "order", "SKIPPED");
    m.runs.runEnded("shop", "refund", "COMPLETED");
    m.executor.stepJournaled("shop", "order", "succeeded", 0.02);
    m.executor.stepJournaled("shop", "order", "retried", 3);
    m.executor.stepJournaled("shop", "order", "failed", -1);
    m.ingest.eventsReceived(5);
    m.ingest.eventsRejected(2, "invalid");
    expect(await value(m, "stepwise_runs_started_total", { app: "shop", function: "order" })).toBe(2);
    expect(await value(m, "stepwise_runs_ended_total", { app: "shop", function: "order", status: "COMPLETED" })).toBe(1);
    expect(await value(m, "stepwise_runs_ended_total", { app: "shop", function: "order", status: "SKIPPED" })).toBe(1);
    expect(await value(m, "stepwise_runs_ended_total", { app: "shop", function: "refund", status: "COMPLETED" })).toBe(1);
    for (const outcome of ["succeeded", "retried", "failed"]) {
      expect(await value(m, "stepwise_step_attempts_total", { app: "shop", function: "order", outcome })).toBe(1);
    }
    expect(await value(m, "stepwise_step_duration_seconds_count", { app: "shop", function: "order" })).toBe(3);
    // A worker clock that went back counts as 0, not as a negative duration.
    expect(await value(m, "stepwise_step_duration_seconds_sum", { app: "shop", function: "order" })).toBeCloseTo(3.02);
    expect(await value(m, "stepwise_events_received_total")).toBe(5);
    expect(await value(m, "stepwise_events_rejected_total", { reason: "invalid" })).toBe(2);
    expect(await value(m, "stepwise_events_rejected_total", { reason: "unavailable" })).toBe(0);
  });

  it("observes batch sizes, publish and statement latencies, timer lateness", async () => {
    const m = new ServiceMetrics();
    const claims = m.journal.batchSize("claim");
    claims(1);
    claims(32);
    m.bus.publishLatency("work")(0.002);
    m.journal.statement(0.001);
    m.scheduler.timerFired(0.3);
    expect(await value(m, "stepwise_group_commit_batch_size_sum", { kind: "claim" })).toBe(33);
    expect(await value(m, "stepwise_group_commit_batch_size_count", { kind: "claim" })).toBe(2);
    expect(await value(m, "stepwise_bus_publish_duration_seconds_count", { stream: "work" })).toBe(1);
    expect(await value(m, "stepwise_journal_statement_duration_seconds_count")).toBe(1);
    expect(await value(m, "stepwise_timer_lateness_seconds_sum")).toBeCloseTo(0.3);
  });

  it("reads the queue with one query per scrape for both gauges, and shows none when it fails", async () => {
    const m = new ServiceMetrics();
    let reads = 0;
    let rows: QueuedRuns[] = [
      { appId: "shop", functionId: "order", depth: 7, oldestAgeSeconds: 12.5 },
      { appId: "shop", functionId: "refund", depth: 0, oldestAgeSeconds: 0 },
    ];
    let failing = false;
    const stop = m.scheduler.watchQueue(async () => {
      reads++;
      if (failing) throw new Error("Postgres is down");
      return rows;
    });
    const text = await m.text();
    expect(reads).toBe(1);
    expect(text).toContain('stepwise_queue_depth{app="shop",function="order"} 7');
    expect(text).toContain('stepwise_queue_oldest_age_seconds{app="shop",function="order"} 12.5');
    expect(text).toContain('stepwise_queue_depth{app="shop",function="refund"} 0');
    rows = [{ appId: "shop", functionId: "order", depth: 1, oldestAgeSeconds: 1 }];
    const next = await m.text();
    expect(reads).toBe(2);
    expect(next).not.toContain('function="refund"');
    failing = true;
    expect(await m.text()).not.toMatch(/^stepwise_queue_depth\{/m);
    stop();
    failing = false;
    await m.text();
    expect(reads).toBe(3);
  });

  it("sums the workers of every executor watched, by app", async () => {
    const m = new ServiceMetrics();
    const a = [
      { appId: "shop", capacity: 10, used: 3 },
      { appId: "shop", capacity: 5, used: 5 },
    ];
    const stopA = m.executor.watchWorkers(() => a);
    m.executor.watchWorkers(() => [{ appId: "ops", capacity: 2, used: 0 }]);
    expect(await value(m, "stepwise_worker_sessions", { app: "shop" })).toBe(2);
    expect(await value(m, "stepwise_worker_slots", { app: "shop" })).toBe(15);
    expect(await value(m, "stepwise_worker_slots_used", { app: "shop" })).toBe(8);
    expect(await value(m, "stepwise_worker_sessions", { app: "ops" })).toBe(1);
    stopA();
    expect(await value(m, "stepwise_worker_sessions", { app: "shop" })).toBe(0);
    expect(await value(m, "stepwise_worker_slots", { app: "ops" })).toBe(2);
  });

  describe("GET /metrics", () => {
    let server: RunningServer | undefined;
    afterEach(async () => {
      await server?.close();
      server = undefined;
    });

    it("answers in Prometheus text format beside the Connect routes; other methods get 405, other paths go on", async () => {
      const m = new ServiceMetrics({ processMetrics: true });
      m.runs.runEnded("shop", "order", "FAILED");
      server = await serveConnect(() => {}, 0, "127.0.0.1", { plain: [m.handler] });
      const url = `http://127.0.0.1:${server.port}`;
      const res = await fetch(`${url}/metrics`);
      expect(res.status).toBe(200);
      expect(res.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
      const text = await res.text();
      expect(text).toContain('stepwise_runs_ended_total{app="shop",function="order",status="FAILED"} 1');
      expect(text).toMatch(/^process_cpu_seconds_total /m);
      for (const line of text.split("\n")) {
        expect(line, line).toMatch(/^(|# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .*|[a-zA-Z_:][a-zA-Z0-9_:]*(\{.*\})? \S+)$/);
      }
      const head = await fetch(`${url}/metrics`, { method: "HEAD" });
      expect(head.status).toBe(200);
      expect(await head.text()).toBe("");
      expect((await fetch(`${url}/metrics`, { method: "POST" })).status).toBe(405);
      expect((await fetch(`${url}/other`)).status).toBe(404);
    });
  });
});

describe("timedSql", () => {
  it("reports every statement, those that fail and those of a transaction too", async () => {
    const seen: number[] = [];
    const tx: SqlTx = {
      query: async <R extends Row>() => [] as R[],
      exec: async () => {},
    };
    const inner: Sql = {
      query: async <T extends Row>(text: string) => {
        await new Promise((r) => setTimeout(r, 5));
        if (text === "bad") throw new Error("syntax error");
        return [{ one: 1 }] as unknown as T[];
      },
      transaction: (fn) => fn(tx),
      listen: async () => async () => {},
      close: async () => {},
    };
    const sql = timedSql(inner, (s) => seen.push(s));
    expect(await sql.query("SELECT 1")).toEqual([{ one: 1 }]);
    await expect(sql.query("bad")).rejects.toThrow("syntax error");
    await sql.transaction(async (t) => {
      await t.query("SELECT 2");
      await t.exec("SELECT 3; SELECT 4");
    });
    expect(seen).toHaveLength(4);
    expect(seen[0]).toBeGreaterThanOrEqual(0.004);
  });
});
