import { spawn } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Stepwise, Worker } from "@stepwise/sdk";
import { type Family, parsePrometheusText, sampleValue } from "./support/prometheus-text.js";
import { CLI, eventually, killProcess, runOfEventIn, Stack, waitForOutput } from "./support/stack.js";

// GET /metrics on the real stack: ingest, scheduler and executor as separate
// processes, each with its own registry on its own port, real NATS
// JetStream and Postgres. A known sequence of runs, and every counter it
// moves checked for its exact value in the service that counts it.
describe("metrics on the real stack", () => {
  const stack = new Stack();
  const APP = "metered";
  let client: Stepwise;
  let functions: ConstructorParameters<typeof Worker>[0]["functions"] = [];
  let worker: Worker | undefined;

  async function scrape(url: string): Promise<Map<string, Family>> {
    const res = await fetch(`${url}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toContain("text/plain");
    return parsePrometheusText(await res.text());
  }

  const fn = (id: string, extra: Record<string, string> = {}) => ({ app: APP, function: id, ...extra });

  beforeAll(async () => {
    await stack.start();
    client = new Stepwise({ appId: APP, url: stack.ingestUrl });
    const ok = client.createFunction({ id: "ok", triggers: [{ event: "m.ok" }] }, async ({ step }) => {
      await step.run("a", () => 1);
      await step.run("b", () => 2);
      return "ok";
    });
    const flaky = client.createFunction(
      { id: "flaky", triggers: [{ event: "m.flaky" }], retries: 2, backoff: { base: "50ms", factor: 1, jitter: false } },
      async ({ step }) => {
        await step.run("charge", () => {
          throw new Error("declined");
        });
      },
    );
    const waiter = client.createFunction({ id: "waiter", triggers: [{ event: "m.wait" }] }, async ({ step }) => {
      await step.run("prep", () => "ready");
      await step.waitForEvent("never", { event: "m.never", timeout: "1h" });
    });
    const once = client.createFunction(
      { id: "once", triggers: [{ event: "m.once" }], idempotency: "event.data.key" },
      async ({ step }) => step.run("only", () => "once"),
    );
    functions = [ok, flaky, waiter, once];
  });

  afterAll(async () => {
    await worker?.close();
    client?.close();
    await stack.stop();
  });

  it("/metrics of each service parses as Prometheus text, and its counters move by exactly what a known sequence of runs did", async () => {
    // Before any worker: the functions are registered by one that connects
    // and leaves, then 3 runs wait in the queue.
    const first = new Worker({ url: stack.executorUrl, functions, capacity: 4, handleSignals: false });
    await first.connect();
    await first.close();
    const queued = await client.send([1, 2, 3].map((i) => ({ name: "m.ok", data: { i } })));
    for (const id of queued) await runOfEventIn(client, id, "QUEUED");
    const sentAt = Date.now();
    await eventually(async () => {
      const s = await scrape(stack.schedulerUrl);
      return sampleValue(s, "stepwise_queue_depth", fn("ok")) === 3 ? s : undefined;
    }, 10_000, "the queue depth to show 3 runs");
    const waiting = await scrape(stack.schedulerUrl);
    expect(sampleValue(waiting, "stepwise_queue_depth", fn("flaky"))).toBe(0);
    const age = sampleValue(waiting, "stepwise_queue_oldest_age_seconds", fn("ok"));
    expect(age).toBeGreaterThan(0);
    expect(age).toBeLessThan((Date.now() - sentAt) / 1000 + 10);

    // One worker from now on: the queued runs and the rest of the sequence.
    worker = new Worker({ url: stack.executorUrl, functions, capacity: 4, handleSignals: false });
    await worker.connect();
    const oks = await client.send([1, 2, 3, 4, 5].map((i) => ({ name: "m.ok", data: { i } })));
    const [flakyEvent] = await client.send({ name: "m.flaky", data: {} });
    const [waitEvent] = await client.send({ name: "m.wait", data: {} });
    const onceEvents = await client.send([
      { name: "m.once", data: { key: "k" } },
      { name: "m.once", data: { key: "k" } },
    ]);
    // An invalid event, refused before anything is published (the SDK would check it first).
    const invalid = await fetch(`${stack.ingestUrl}/stepwise.v1.IngestService/Send`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ events: [{ name: "" }] }),
    });
    expect(invalid.status).toBe(400);

    for (const id of [...queued, ...oks]) await runOfEventIn(client, id, "COMPLETED");
    await runOfEventIn(client, flakyEvent!, "FAILED");
    const waiterRun = await runOfEventIn(client, waitEvent!, "WAITING");
    expect((await client.cancelRun(waiterRun.id, { reason: "metrics test" })).status).toBe("CANCELLED");
    const onceRuns = await Promise.all(onceEvents.map((id) => eventually(async () => {
      const [r] = await client.listRunsOfEvent(id);
      return r && (r.status === "COMPLETED" || r.status === "SKIPPED") ? r : undefined;
    })));
    expect(onceRuns.map((r) => r.status).sort()).toEqual(["COMPLETED", "SKIPPED"]);
    // The last acks and announcements are in flight a moment after the runs end: settle on the executor's figures.
    await eventually(async () => {
      const e = await scrape(stack.executorUrl);
      return sampleValue(e, "stepwise_worker_slots_used", { app: APP }) === 0 ? true : undefined;
    }, 10_000, "the worker's slots to be free");

    const ingest = await scrape(stack.ingestUrl);
    const scheduler = await scrape(stack.schedulerUrl);
    const executor = await scrape(stack.executorUrl);

    // Ingest: 3 + 5 + 1 + 1 + 2 events received, 1 refused; the cancel it made.
    expect(sampleValue(ingest, "stepwise_events_received_total")).toBe(12);
    expect(sampleValue(ingest, "stepwise_events_rejected_total", { reason: "invalid" })).toBe(1);
    expect(sampleValue(ingest, "stepwise_events_rejected_total", { reason: "unavailable" })).toBe(0);
    expect(sampleValue(ingest, "stepwise_runs_ended_total", fn("waiter", { status: "CANCELLED" }))).toBe(1);
    expect(sampleValue(ingest, "stepwise_bus_publish_duration_seconds_count", { stream: "events" })).toBeGreaterThanOrEqual(12);
    // Each service shows its own metrics only.
    expect(ingest.has("stepwise_step_attempts_total")).toBe(false);
    expect(ingest.has("stepwise_queue_depth")).toBe(false);

    // Executor: the runs it started and ended, their steps, its worker.
    const started = { ok: 8, flaky: 1, waiter: 1, once: 1 };
    for (const [id, n] of Object.entries(started)) expect(sampleValue(executor, "stepwise_runs_started_total", fn(id)), id).toBe(n);
    expect(sampleValue(executor, "stepwise_runs_ended_total", fn("ok", { status: "COMPLETED" }))).toBe(8);
    expect(sampleValue(executor, "stepwise_runs_ended_total", fn("once", { status: "COMPLETED" }))).toBe(1);
    expect(sampleValue(executor, "stepwise_runs_ended_total", fn("flaky", { status: "FAILED" }))).toBe(1);
    expect(sampleValue(executor, "stepwise_runs_ended_total", fn("waiter", { status: "CANCELLED" }))).toBe(0);
    expect(sampleValue(executor, "stepwise_step_attempts_total", fn("ok", { outcome: "succeeded" }))).toBe(16);
    expect(sampleValue(executor, "stepwise_step_attempts_total", fn("waiter", { outcome: "succeeded" }))).toBe(1);
    expect(sampleValue(executor, "stepwise_step_attempts_total", fn("once", { outcome: "succeeded" }))).toBe(1);
    expect(sampleValue(executor, "stepwise_step_attempts_total", fn("flaky", { outcome: "retried" }))).toBe(2);
    expect(sampleValue(executor, "stepwise_step_attempts_total", fn("flaky", { outcome: "failed" }))).toBe(1);
    expect(sampleValue(executor, "stepwise_step_attempts_total", fn("flaky", { outcome: "succeeded" }))).toBe(0);
    expect(sampleValue(executor, "stepwise_step_duration_seconds_count", fn("ok"))).toBe(16);
    expect(sampleValue(executor, "stepwise_step_duration_seconds_count", fn("flaky"))).toBe(3);
    // Step results and completions go through their group commits: 18 + 1 results, 9 completions.
    expect(sampleValue(executor, "stepwise_group_commit_batch_size_sum", { kind: "step" })).toBe(19);
    expect(sampleValue(executor, "stepwise_group_commit_batch_size_sum", { kind: "completion" })).toBe(9);
    expect(sampleValue(executor, "stepwise_group_commit_batch_size_sum", { kind: "claim" })).toBeGreaterThanOrEqual(13);
    expect(sampleValue(executor, "stepwise_worker_sessions", { app: APP })).toBe(1);
    expect(sampleValue(executor, "stepwise_worker_slots", { app: APP })).toBe(4);
    expect(sampleValue(executor, "stepwise_worker_slots_used", { app: APP })).toBe(0);
    expect(sampleValue(executor, "stepwise_journal_statement_duration_seconds_count")).toBeGreaterThan(0);
    expect(executor.has("stepwise_events_received_total")).toBe(false);

    // Scheduler: the run admission skipped, the two retries' timers, the queue empty again.
    expect(sampleValue(scheduler, "stepwise_runs_ended_total", fn("once", { status: "SKIPPED" }))).toBe(1);
    expect(sampleValue(scheduler, "stepwise_timer_lateness_seconds_count")).toBe(2);
    for (const id of Object.keys(started)) {
      expect(sampleValue(scheduler, "stepwise_queue_depth", fn(id)), id).toBe(0);
      expect(sampleValue(scheduler, "stepwise_queue_oldest_age_seconds", fn(id)), id).toBe(0);
    }
    // The 12 events and the cancelled run's event, each stored in a group commit.
    expect(sampleValue(scheduler, "stepwise_group_commit_batch_size_sum", { kind: "event" })).toBeGreaterThanOrEqual(13);
    expect(sampleValue(scheduler, "stepwise_bus_publish_duration_seconds_count", { stream: "work" })).toBeGreaterThan(0);
    // Counted by the process that ended them: no other service counts these runs.
    for (const s of [ingest, scheduler]) {
      expect(sampleValue(s, "stepwise_runs_ended_total", fn("ok", { status: "COMPLETED" }))).toBe(0);
      expect(sampleValue(s, "stepwise_runs_started_total", fn("ok"))).toBe(0);
    }
    // Process metrics under their usual names.
    expect(sampleValue(scheduler, "process_cpu_seconds_total")).toBeGreaterThan(0);
  });

  it("a non-GET /metrics is refused, and the scheduler answers /healthz", async () => {
    expect((await fetch(`${stack.executorUrl}/metrics`, { method: "POST" })).status).toBe(405);
    expect((await fetch(`${stack.schedulerUrl}/healthz`)).status).toBe(200);
  });
});

describe("metrics of stepwise dev", () => {
  it("serves every service's metrics from one registry on its one port", async () => {
    const proc = spawn(process.execPath, [CLI, "dev", "--memory", "--port", "0"], { stdio: ["ignore", "pipe", "pipe"] });
    try {
      let port = 0;
      proc.stdout.on("data", (d: Buffer) => {
        const m = /listening on http:\/\/[^:]+:(\d+)/.exec(d.toString());
        if (m) port = Number(m[1]);
      });
      await waitForOutput(proc, "listening on", "stepwise dev", 20_000);
      const url = `http://127.0.0.1:${port}`;
      const client = new Stepwise({ appId: "dev-metrics", url });
      const one = client.createFunction({ id: "one", triggers: [{ event: "d.one" }] }, async ({ step }) => step.run("s", () => 1));
      const worker = new Worker({ url, functions: [one], capacity: 2, handleSignals: false });
      await worker.connect();
      try {
        const [id] = await client.send({ name: "d.one", data: {} });
        await runOfEventIn(client, id!, "COMPLETED");
        const m = await eventually(async () => {
          const s = parsePrometheusText(await (await fetch(`${url}/metrics`)).text());
          return sampleValue(s, "stepwise_runs_ended_total", { app: "dev-metrics", function: "one", status: "COMPLETED" }) === 1 ? s : undefined;
        }, 10_000, "the run's end to be counted");
        expect(sampleValue(m, "stepwise_events_received_total")).toBe(1);
        expect(sampleValue(m, "stepwise_runs_started_total", { app: "dev-metrics", function: "one" })).toBe(1);
        expect(sampleValue(m, "stepwise_step_attempts_total", { app: "dev-metrics", function: "one", outcome: "succeeded" })).toBe(1);
        expect(sampleValue(m, "stepwise_worker_sessions", { app: "dev-metrics" })).toBe(1);
        expect(sampleValue(m, "stepwise_queue_depth", { app: "dev-metrics", function: "one" })).toBe(0);
        expect(sampleValue(m, "stepwise_journal_statement_duration_seconds_count")).toBeGreaterThan(0);
        client.close();
      } finally {
        await worker.close();
      }
    } finally {
      await killProcess(proc);
    }
  });
});

describe("the Prometheus text reader of these tests", () => {
  const valid = [
    "# HELP x_total Things.",
    "# TYPE x_total counter",
    'x_total{a="1",b="q\\"uote"} 3',
    "",
    "# TYPE h histogram",
    'h_bucket{le="0.5"} 1',
    'h_bucket{le="+Inf"} 2',
    "h_sum 1.5",
    "h_count 2",
    "# TYPE g gauge",
    "g Nan",
    "",
  ].join("\n");

  it("reads a valid scrape", () => {
    const f = parsePrometheusText(valid);
    expect(sampleValue(f, "x_total", { a: "1", b: 'q"uote' })).toBe(3);
    expect(sampleValue(f, "h_count")).toBe(2);
    expect(Number.isNaN(sampleValue(f, "g"))).toBe(true);
  });

  it("refuses what Prometheus would not read, or a scrape that contradicts itself", () => {
    const bad = [
      valid.replace("# TYPE x_total counter\n", ""), // a sample before its TYPE
      valid.replace("x_total{", "x-total{"), // not a metric name
      valid.replace('a="1"', "a=1"), // an unquoted label value
      valid.replace("} 3", "} three"), // not a number
      valid.replace('h_bucket{le="0.5"} 1', 'h_bucket{le="0.5"} 3'), // buckets not cumulative
      valid.replace("h_count 2", "h_count 5"), // a count that is not the +Inf bucket
      valid.replace("# HELP", "# NOTE"), // a comment that is neither HELP nor TYPE
      `${valid}x_total{a="2"} 1\n`, // a family's lines not contiguous
      valid.slice(0, -1), // no final line feed
    ];
    for (const text of bad) expect(() => parsePrometheusText(text)).toThrow();
  });
});
