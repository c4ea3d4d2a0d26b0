import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Stepwise, Worker, type StepwiseFunction } from "@stepwise/sdk";
import { jetstreamManager, type ConsumerInfo } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { PrivateNats, Stack, eventually, type ExtraService } from "./support/stack.js";

// How soon work moves on after a failure, measured, with bounds that follow
// from STEPWISE_LEASE_MS and not from fixed timeouts elsewhere:
//  - the runs of a work message an executor pulled but had not claimed yet
//    (they wait in its backlog for a worker slot) are claimed elsewhere
//    within a lease once that executor is SIGKILLed or SIGSTOPped, not at
//    JetStream's redelivery 30 s later;
//  - runs woken by timers while NATS is down continue within seconds of
//    NATS coming back, not at STEPWISE_REQUEUE_AFTER_MS (120 s here).

const LEASE_MS = 2_000;
/** Time allowed on top of the lease for the reconciler's sweep, the redelivery and the claim on a busy machine. */
const MARGIN_MS = 3_000;
const REQUEUE_AFTER_MS = 120_000;
/** How long a test waits to measure a recovery that is late, before it reports it. */
const MEASURE_FOR_MS = 35_000;

describe("recovery bounds (lease 2 s, requeue after 120 s)", () => {
  const nats = new PrivateNats();
  let stack: Stack;

  beforeAll(async () => {
    await nats.start();
    stack = await new Stack({
      NATS_URL: nats.url,
      STEPWISE_LEASE_MS: String(LEASE_MS),
      STEPWISE_REQUEUE_AFTER_MS: String(REQUEUE_AFTER_MS),
    }).start();
  });

  afterAll(async () => {
    await stack?.stop();
    await nats.stop();
  });

  async function workConsumer(app: string): Promise<ConsumerInfo> {
    const nc = await connect({ servers: nats.url });
    try {
      const jsm = await jetstreamManager(nc);
      const upper = stack.prefix.toUpperCase().replace(/[^A-Z0-9_-]/g, "_");
      return await jsm.consumers.info(`${upper}_WORK`, `${stack.prefix}-work-${app}`.replace(/[.*>]/g, "_"));
    } finally {
      await nc.close();
    }
  }

  async function statusCounts(app: string): Promise<Record<string, number>> {
    const rows = await stack.query<{ status: string; n: string }>("SELECT status, count(*) AS n FROM runs WHERE app_id = $1 GROUP BY status", [app]);
    return Object.fromEntries(rows.map((r) => [r.status, Number(r.n)]));
  }

  /**
   * Executor A (an extra one) with a one-slot worker: it pulls one work
   * message at a time, claims one of its runs for the slot and keeps the
   * rest in its backlog. The run in the slot is held until A has every
   * message of the app's 20 runs; then A holds one run and the others wait
   * in its backlog, unclaimed (QUEUED), their messages unacknowledged.
   * The scheduler may split 20 events into several messages (its first
   * statement often takes one event alone), hence the held runs released
   * until no message is left in the stream.
   */
  async function arrangeBacklog(app: string): Promise<{
    a: ExtraService;
    fn: StepwiseFunction;
    onA: Worker;
    /** First time each run's step body started after `since`, by n. */
    startsAfter: (since: number) => Map<number, number>;
    stopHolding: () => void;
    releaseAll: () => void;
    /** The n of the runs not COMPLETED (the one A holds and its backlog). */
    unfinished: number[];
  }> {
    const client = new Stepwise({ appId: app, url: stack.ingestUrl });
    const entries: Array<{ n: number; at: number }> = [];
    const held: Array<() => void> = [];
    let holding = true;
    const fn = client.createFunction({ id: "twenty", triggers: [{ event: `${app}.go` }] }, async ({ event, step }) => {
      const n = Number(event.data["n"]);
      await step.run("work", async () => {
        entries.push({ n, at: Date.now() });
        if (holding) await new Promise<void>((r) => held.push(r));
        return n;
      });
      return n;
    });
    const a = await stack.startExtra("executor");
    const onA = new Worker({ url: `http://127.0.0.1:${a.port}`, functions: [fn], capacity: 1, handleSignals: false, maxReconnectDelayMs: 300 });
    await onA.connect();
    // A pulls for the app once the worker is there: the app's work consumer exists then.
    await eventually(() => workConsumer(app), 10_000, "the app's work consumer");
    await client.send(Array.from({ length: 20 }, (_, n) => ({ id: `${app}-${n}`, name: `${app}.go`, data: { n } })));
    await eventually(async () => {
      const c = await statusCounts(app);
      const total = Object.values(c).reduce((x, y) => x + y, 0);
      return total === 20 && (await stack.eventsSettled()) ? true : undefined;
    }, 15_000, "the 20 runs made and their work published");
    for (let released = 0; ; ) {
      await eventually(async () => (held.length > released ? true : undefined), 10_000, "A to start a run on its worker");
      if ((await workConsumer(app)).num_pending === 0) break;
      held[released++]!();
    }
    const consumer = await workConsumer(app);
    const counts = await statusCounts(app);
    console.log(`${app}: A holds ${counts["RUNNING"] ?? 0} run and ${counts["QUEUED"] ?? 0} in its backlog (${consumer.num_ack_pending} messages unacknowledged), ${counts["COMPLETED"] ?? 0} completed`);
    expect(counts["RUNNING"]).toBe(1);
    expect(counts["QUEUED"] ?? 0).toBeGreaterThanOrEqual(10);
    expect(consumer.num_pending).toBe(0);
    expect(consumer.num_ack_pending).toBeGreaterThanOrEqual(1);
    const rows = await stack.query<{ n: string }>("SELECT split_part(event_id, '-', 2) AS n FROM runs WHERE app_id = $1 AND status <> 'COMPLETED'", [app]);
    return {
      a,
      fn,
      onA,
      startsAfter: (since) => {
        const m = new Map<number, number>();
        for (const e of entries) if (e.at >= since && !m.has(e.n)) m.set(e.n, e.at);
        return m;
      },
      stopHolding: () => (holding = false),
      releaseAll: () => {
        holding = false;
        for (const r of held) r();
      },
      unfinished: rows.map((r) => Number(r.n)),
    };
  }

  /** Waits for every unfinished run to start on the other executor (or MEASURE_FOR_MS), prints and checks the waits. */
  async function expectMovedOn(app: string, arranged: Awaited<ReturnType<typeof arrangeBacklog>>, since: number, what: string): Promise<void> {
    const want = arranged.unfinished;
    await eventually(async () => (want.every((n) => arranged.startsAfter(since).has(n)) ? true : undefined), MEASURE_FOR_MS, what).catch(() => undefined);
    const starts = arranged.startsAfter(since);
    const waits = want.map((n) => ({ n, ms: starts.has(n) ? starts.get(n)! - since : null }));
    const measured = waits.filter((w) => w.ms !== null).map((w) => w.ms!).sort((x, y) => x - y);
    console.log(
      `${what}: ${measured.length} of ${want.length} unfinished runs started on the other executor; ` +
        `waits after the ${app === "stopped" ? "SIGSTOP" : "SIGKILL"} min ${measured[0] ?? "-"} ms, ` +
        `median ${measured[Math.floor(measured.length / 2)] ?? "-"} ms, max ${measured.at(-1) ?? "-"} ms` +
        (measured.length < want.length ? `; not started within ${MEASURE_FOR_MS} ms: n=${waits.filter((w) => w.ms === null).map((w) => w.n).join(",")}` : ""),
    );
    expect(waits.filter((w) => w.ms === null)).toEqual([]);
    expect(Math.max(...measured)).toBeLessThan(LEASE_MS + MARGIN_MS);
    await eventually(async () => ((await statusCounts(app))["COMPLETED"] === 20 ? true : undefined), 20_000, "all 20 runs to complete");
    const steps = await stack.query<{ n: string }>(
      "SELECT count(*) AS n FROM steps s JOIN runs r ON r.id = s.run_id WHERE r.app_id = $1 AND s.step_key = 'work:0'",
      [app],
    );
    expect(Number(steps[0]!.n)).toBe(20);
  }

  it("an executor SIGKILLed with unclaimed runs in its backlog: they are claimed on the other executor within lease + margin", async () => {
    const arranged = await arrangeBacklog("killed");
    const other = new Worker({ url: stack.executorUrl, functions: [arranged.fn], capacity: 25, handleSignals: false, maxReconnectDelayMs: 300 });
    try {
      await other.connect();
      // The other executor pulls now, and gets nothing: A holds every message.
      await new Promise((r) => setTimeout(r, 600));
      expect(arranged.startsAfter(0).size).toBe(20 - arranged.unfinished.length + 1);
      arranged.stopHolding();
      const killedAt = Date.now();
      await arranged.a.kill("SIGKILL");
      await expectMovedOn("killed", arranged, killedAt, "SIGKILL of the executor");
    } finally {
      arranged.releaseAll();
      await arranged.onA.kill();
      await other.close();
    }
  }, 90_000);

  it("an executor SIGSTOPped with unclaimed runs in its backlog: they move on to the other executor within lease + margin", async () => {
    const arranged = await arrangeBacklog("stopped");
    const other = new Worker({ url: stack.executorUrl, functions: [arranged.fn], capacity: 25, handleSignals: false, maxReconnectDelayMs: 300 });
    try {
      await other.connect();
      await new Promise((r) => setTimeout(r, 600));
      expect(arranged.startsAfter(0).size).toBe(20 - arranged.unfinished.length + 1);
      arranged.stopHolding();
      const stoppedAt = Date.now();
      arranged.a.proc.kill("SIGSTOP");
      await expectMovedOn("stopped", arranged, stoppedAt, "SIGSTOP of the executor");
    } finally {
      arranged.a.proc.kill("SIGCONT");
      arranged.releaseAll();
      await arranged.onA.kill();
      await other.close();
      await arranged.a.kill("SIGKILL");
    }
  }, 90_000);

  it("NATS killed for ~2 s while 30 sleeps end: the woken runs continue within outage + 5 s, not at STEPWISE_REQUEUE_AFTER_MS", async () => {
    const client = new Stepwise({ appId: "naps", url: stack.ingestUrl });
    const before = new Map<number, number>();
    const after = new Map<number, number>();
    const resumedAt = new Map<number, number>();
    const bump = (m: Map<number, number>, n: number) => m.set(n, (m.get(n) ?? 0) + 1);
    const fn = client.createFunction({ id: "sleeper", triggers: [{ event: "naps.go" }] }, async ({ event, step }) => {
      const n = Number(event.data["n"]);
      await step.run("before", () => bump(before, n).size);
      await step.sleep("nap", Number(event.data["ms"]));
      await step.run("after", () => {
        bump(after, n);
        if (!resumedAt.has(n)) resumedAt.set(n, Date.now());
        return n;
      });
      return n;
    });
    const worker = new Worker({ url: stack.executorUrl, functions: [fn], capacity: 40, handleSignals: false, maxReconnectDelayMs: 300 });
    try {
      await worker.connect();
      await client.send(Array.from({ length: 30 }, (_, n) => ({ id: `naps-${n}`, name: "naps.go", data: { n, ms: 5_000 } })));
      await eventually(async () => ((await statusCounts("naps"))["WAITING"] === 30 ? true : undefined), 15_000, "30 sleeping runs");
      const dues = await stack.query<{ n: string; due_ms: number }>(
        `SELECT split_part(r.event_id, '-', 2) AS n, (extract(epoch FROM t.due_at) * 1000)::float8 AS due_ms
         FROM timers t JOIN runs r ON r.id = t.run_id WHERE r.app_id = 'naps'`,
      );
      expect(dues).toHaveLength(30);
      const dueOf = new Map(dues.map((d) => [Number(d.n), d.due_ms]));
      const firstDue = Math.min(...dueOf.values());
      const lastDue = Math.max(...dueOf.values());
      const killAt = firstDue - 500;
      expect(Date.now()).toBeLessThan(killAt);
      await new Promise((r) => setTimeout(r, killAt - Date.now()));
      await nats.kill();
      const killedAt = Date.now();
      await new Promise((r) => setTimeout(r, Math.max(killedAt + 2_000, lastDue + 500) - Date.now()));
      await nats.start();
      const backAt = Date.now();
      const outageMs = backAt - killedAt;
      // Every wake-up fell inside the outage.
      expect(firstDue).toBeGreaterThan(killedAt);
      expect(lastDue).toBeLessThan(backAt);

      await eventually(async () => (resumedAt.size === 30 ? true : undefined), outageMs + 25_000, "the 30 runs to continue").catch(() => undefined);
      const late = [...dueOf].map(([n, due]) => ({ n, lateMs: resumedAt.has(n) ? resumedAt.get(n)! - due : null }));
      const measured = late.filter((l) => l.lateMs !== null).map((l) => l.lateMs!).sort((x, y) => x - y);
      const afterBack = [...resumedAt.values()].map((t) => t - backAt).sort((x, y) => x - y);
      console.log(
        `NATS down ${outageMs} ms over the wake-ups of 30 sleeps (due ${Math.round(firstDue - killedAt)}-${Math.round(lastDue - killedAt)} ms after the kill): ` +
          `${measured.length} continued; late by min ${Math.round(measured[0] ?? NaN)} ms, median ${Math.round(measured[Math.floor(measured.length / 2)] ?? NaN)} ms, ` +
          `max ${Math.round(measured.at(-1) ?? NaN)} ms; the last ${Math.round(afterBack.at(-1) ?? NaN)} ms after NATS was back` +
          (measured.length < 30 ? `; ${30 - measured.length} not continued ${Math.round(Date.now() - backAt)} ms after NATS was back, statuses ${JSON.stringify(await statusCounts("naps"))}` : ""),
      );
      expect(late.filter((l) => l.lateMs === null).map((l) => l.n)).toEqual([]);
      expect(Math.max(...measured)).toBeLessThan(outageMs + 5_000);

      await eventually(async () => ((await statusCounts("naps"))["COMPLETED"] === 30 ? true : undefined), 20_000, "the 30 runs to complete");
      for (let n = 0; n < 30; n++) expect({ n, before: before.get(n), after: after.get(n) }).toEqual({ n, before: 1, after: 1 });
      const steps = await stack.query<{ step_key: string; n: string }>(
        "SELECT s.step_key, count(*) AS n FROM steps s JOIN runs r ON r.id = s.run_id WHERE r.app_id = 'naps' GROUP BY s.step_key ORDER BY s.step_key",
      );
      expect(steps.map((s) => [s.step_key, Number(s.n)])).toEqual([
        ["after:0", 30],
        ["before:0", 30],
        ["nap:0", 30],
      ]);
    } finally {
      await worker.close();
    }
  }, 90_000);
});
