import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Stepwise, Worker } from "@stepwise/sdk";
import { Stack, eventually, type ExtraService } from "./support/stack.js";

interface TickRow {
  run_id: string;
  tick: string;
  tick_ms: number;
  created_ms: number;
  status: string;
}

// A cron trigger fires each tick once, however many schedulers share the
// firing, and keeps firing when one of them dies.
describe("cron trigger across two schedulers", () => {
  const stack = new Stack();
  let extra: ExtraService;
  let worker: Worker;
  /** Executions of the step body, by tick. */
  const executions = new Map<string, number>();

  beforeAll(async () => {
    await stack.start();
    extra = await stack.startExtra("scheduler");
    const client = new Stepwise({ appId: "clock", url: stack.ingestUrl });
    const fn = client.createFunction({ id: "every-second", triggers: [{ cron: "* * * * * *" }] }, async ({ event, step }) => {
      const tick = String(event.data["tick"]);
      await step.run("tick", () => {
        executions.set(tick, (executions.get(tick) ?? 0) + 1);
        return tick;
      });
      return tick;
    });
    worker = new Worker({ url: stack.executorUrl, functions: [fn], capacity: 4, handleSignals: false, maxReconnectDelayMs: 300 });
    await worker.connect();
  });

  afterAll(async () => {
    await worker?.close();
    await stack.stop();
  });

  async function ticks(): Promise<TickRow[]> {
    return stack.query<TickRow>(
      `SELECT r.id AS run_id, e.data->>'tick' AS tick, (extract(epoch FROM e.ts) * 1000)::float8 AS tick_ms,
         (extract(epoch FROM r.created_at) * 1000)::float8 AS created_ms, r.status
       FROM runs r JOIN events e ON e.id = r.event_id
       WHERE r.app_id = 'clock' AND r.function_id = 'every-second' ORDER BY e.ts`,
    );
  }

  /**
   * Watches the window [from, from + seconds) and asserts on the ticks in
   * it: seconds ± 1 runs made in it, one run per tick, each executed once
   * and completed, fired close to its tick.
   */
  async function expectTicks(from: number, seconds: number): Promise<TickRow[]> {
    const to = from + seconds * 1000;
    await new Promise((r) => setTimeout(r, to + 1_500 - Date.now()));
    const inWindow = await eventually(async () => {
      const rows = (await ticks()).filter((r) => r.tick_ms >= from && r.tick_ms < to);
      return rows.every((r) => r.status === "COMPLETED") ? rows : undefined;
    }, 15_000, "the runs of the window to complete");

    // One run per whole-second tick: every tick in the window, or all but one.
    expect(inWindow.every((r) => r.tick_ms % 1000 === 0)).toBe(true);
    expect(new Set(inWindow.map((r) => r.tick)).size).toBe(inWindow.length);
    expect(inWindow.length).toBeGreaterThanOrEqual(seconds - 1);
    expect(inWindow.length).toBeLessThanOrEqual(seconds);
    // Runs made during the window, by the database's clock: seconds ± 1.
    const made = (await ticks()).filter((r) => r.created_ms >= from && r.created_ms < to);
    expect(made.length).toBeGreaterThanOrEqual(seconds - 1);
    expect(made.length).toBeLessThanOrEqual(seconds + 1);
    for (const r of inWindow) {
      expect(executions.get(r.tick), `executions of tick ${r.tick}`).toBe(1);
      // Fired close to the tick, not made up later.
      expect(r.created_ms - r.tick_ms).toBeGreaterThanOrEqual(0);
      expect(r.created_ms - r.tick_ms).toBeLessThan(2_000);
    }
    // No tick twice, over everything fired so far.
    expect(
      await stack.query(
        `SELECT e.data->>'tick' AS tick, count(*) AS n FROM runs r JOIN events e ON e.id = r.event_id
         WHERE r.function_id = 'every-second' GROUP BY 1 HAVING count(*) > 1`,
      ),
    ).toEqual([]);
    const dupes = [...executions.entries()].filter(([, n]) => n !== 1);
    expect(dupes).toEqual([]);
    return inWindow;
  }

  const nextSecond = () => Math.ceil(Date.now() / 1000) * 1000;

  it("fires every second for 10 s with two schedulers: 10 ± 1 runs, no tick twice", async () => {
    expect(extra.proc.exitCode).toBeNull();
    expect(stack.procs.get("scheduler")?.exitCode).toBeNull();
    await expectTicks(nextSecond() + 1_000, 10);
  });

  it("keeps firing after one scheduler is killed with SIGKILL", async () => {
    await stack.kill("scheduler", "SIGKILL");
    expect(extra.proc.exitCode).toBeNull();
    await expectTicks(nextSecond() + 1_000, 5);
  });
});
