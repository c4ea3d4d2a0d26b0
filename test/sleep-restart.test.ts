import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Stepwise, Worker, type StepwiseFunction } from "@stepwise/sdk";
import { Stack, eventually } from "./support/stack.js";

// A sleeping run lives in Postgres only: it holds no worker slot and no
// process, so every service (and the worker) can die and come back while
// it sleeps, and it still wakes once, after its full duration, without
// running again the steps before the sleep.
describe("sleeping runs across a restart of every service", () => {
  const stack = new Stack();
  let client: Stepwise;
  let functions: StepwiseFunction[];
  let worker: Worker;
  const before = new Map<string, number>();
  const after = new Map<string, number>();
  const bump = (m: Map<string, number>, k: string) => m.set(k, (m.get(k) ?? 0) + 1);

  const newWorker = () => new Worker({ url: stack.executorUrl, functions, capacity: 1, handleSignals: false, maxReconnectDelayMs: 300 });

  beforeAll(async () => {
    await stack.start();
    client = new Stepwise({ appId: "naps", url: stack.ingestUrl });
    const sleeper = client.createFunction({ id: "sleeper", triggers: [{ event: "nap" }] }, async ({ event, step }) => {
      const n = String(event.data["n"]);
      const start = await step.run("before", () => {
        bump(before, n);
        return Date.now();
      });
      await step.sleep("nap", Number(event.data["ms"]));
      const end = await step.run("after", () => {
        bump(after, n);
        return Date.now();
      });
      return { start, end };
    });
    const quick = client.createFunction({ id: "quick", triggers: [{ event: "quick" }] }, async ({ step }) => step.run("only", () => Date.now()));
    functions = [sleeper, quick];
    worker = newWorker();
    await worker.connect();
  });

  afterAll(async () => {
    await worker?.close();
    await stack.stop();
  });

  async function statuses(eventIds: string[]): Promise<Map<string, string>> {
    const rows = await stack.query<{ event_id: string; status: string }>("SELECT event_id, status FROM runs WHERE event_id = ANY($1)", [eventIds]);
    return new Map(rows.map((r) => [r.event_id, r.status]));
  }

  async function allWaiting(eventIds: string[]): Promise<void> {
    await eventually(async () => {
      const s = await statuses(eventIds);
      return s.size === eventIds.length && [...s.values()].every((v) => v === "WAITING") ? true : undefined;
    }, 15_000, "every sleeper to be WAITING");
  }

  /** Every run COMPLETED once: before and after ran once each, slept its duration, journal [before, nap, after]. */
  async function expectSleptOnce(sent: Array<{ n: string; id: string }>, ms: number, lateByAtMost: number): Promise<void> {
    const ids = sent.map((s) => s.id);
    await eventually(async () => {
      const s = await statuses(ids);
      return s.size === ids.length && [...s.values()].every((v) => v === "COMPLETED") ? true : undefined;
    }, 30_000, "every sleeper to complete");
    const runs = await stack.query<{ id: string; event_id: string; output: { start: number; end: number } }>(
      "SELECT id, event_id, output FROM runs WHERE event_id = ANY($1)",
      [ids],
    );
    expect(runs).toHaveLength(sent.length);
    for (const s of sent) {
      const run = runs.find((r) => r.event_id === s.id)!;
      expect({ n: s.n, before: before.get(s.n), after: after.get(s.n) }).toEqual({ n: s.n, before: 1, after: 1 });
      expect(run.output.end - run.output.start).toBeGreaterThanOrEqual(ms);
      // Woken by its timer, not by a slow backstop.
      expect(run.output.end - run.output.start).toBeLessThan(ms + lateByAtMost);
      const steps = await stack.query<{ step_key: string }>("SELECT step_key FROM steps WHERE run_id = $1 ORDER BY seq", [run.id]);
      expect(steps.map((x) => x.step_key)).toEqual(["before:0", "nap:0", "after:0"]);
    }
    const runIds = runs.map((r) => r.id);
    expect(await stack.query("SELECT run_id FROM timers WHERE run_id = ANY($1::uuid[])", [runIds])).toEqual([]);
  }

  async function killAll(signal: NodeJS.Signals): Promise<void> {
    await Promise.all((["ingest", "scheduler", "executor"] as const).map((s) => stack.kill(s, signal)));
    expect([...stack.procs.keys()]).toEqual([]);
  }

  async function startAll(): Promise<void> {
    await Promise.all((["ingest", "scheduler", "executor"] as const).map((s) => stack.startService(s)));
  }

  it("kill -9 of ingest, scheduler and executor mid-sleep: a one-slot worker runs other runs meanwhile, each sleeper completes once after its full sleep", async () => {
    const ms = 4_000;
    const sent = await Promise.all(
      ["a1", "a2", "a3", "a4"].map(async (n) => ({ n, id: (await client.send({ name: "nap", data: { n, ms } }))[0]! })),
    );
    await allWaiting(sent.map((s) => s.id));
    // All four sleep and the one slot is free: a quick run goes through now.
    expect(worker.activeRuns).toBe(0);
    const [q] = await client.send({ name: "quick", data: {} });
    const quick = await eventually(async () => {
      const [r] = await client.listRunsOfEvent(q!);
      return r?.status === "COMPLETED" ? r : undefined;
    }, 10_000, "the quick run");
    const sleepers = await statuses(sent.map((s) => s.id));
    expect([...sleepers.values()]).toEqual(["WAITING", "WAITING", "WAITING", "WAITING"]);
    const due = await stack.query<{ due_ms: number }>(
      "SELECT (extract(epoch FROM min(due_at)) * 1000)::float8 AS due_ms FROM timers t JOIN runs r ON r.id = t.run_id WHERE r.event_id = ANY($1)",
      [sent.map((s) => s.id)],
    );
    expect(quick.endedAt!.getTime()).toBeLessThan(due[0]!.due_ms);

    await killAll("SIGKILL");
    await new Promise((r) => setTimeout(r, 500));
    // Still sleeping in Postgres, nothing lost with the processes.
    expect([...(await statuses(sent.map((s) => s.id))).values()]).toEqual(["WAITING", "WAITING", "WAITING", "WAITING"]);
    expect(await stack.query("SELECT kind FROM timers t JOIN runs r ON r.id = t.run_id WHERE r.event_id = ANY($1)", [sent.map((s) => s.id)])).toHaveLength(4);
    await startAll();
    await expectSleptOnce(sent, ms, 4_000);
  });

  it("SIGTERM of every service and a worker restart while asleep, past the due time: each sleeper wakes late but once", async () => {
    const ms = 2_500;
    const sent = await Promise.all(
      ["b1", "b2", "b3"].map(async (n) => ({ n, id: (await client.send({ name: "nap", data: { n, ms } }))[0]! })),
    );
    await allWaiting(sent.map((s) => s.id));
    const sleptAt = Date.now();
    await worker.close();
    await killAll("SIGTERM");
    // Nothing is running while the sleeps end.
    await new Promise((r) => setTimeout(r, Math.max(0, sleptAt + ms + 1_000 - Date.now())));
    const due = await stack.query<{ n: string }>(
      "SELECT count(*) AS n FROM timers t JOIN runs r ON r.id = t.run_id WHERE r.event_id = ANY($1) AND t.due_at < now()",
      [sent.map((s) => s.id)],
    );
    expect(Number(due[0]!.n)).toBe(3);
    await startAll();
    worker = newWorker();
    await worker.connect();
    await expectSleptOnce(sent, ms, 8_000);
  });
});
