import { spawn, type ChildProcess } from "node:child_process";
import { rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Stepwise, type RunInfo } from "@stepwise/sdk";
import pg from "pg";
import { ROOT, Stack, eventually, runOfEventIn, type ExtraService } from "./support/stack.js";

// Flow control through crashes, on the real stack: two schedulers, two
// executors and a worker process on each executor (test/fixtures/
// flow-control-worker.ts). Each test SIGKILLs, in the middle of the work,
// the executor whose worker holds the most runs in progress, and for the
// limits the schedulers decide, one of the schedulers; both come back at
// once (a new scheduler, the executor again), so the next test has two of
// each again. The workers print when each step body starts and ends on
// the machine's monotonic clock; they outlive the executor they are
// connected to, so nothing they measured is lost with it.
describe("flow control through a SIGKILL of an executor and of a scheduler", () => {
  const stack = new Stack();
  let client: Stepwise;
  let secondScheduler: ExtraService;
  let secondExecutor: ExtraService;
  const hold = `${tmpdir()}/stepwise-flow-control-crash-${stack.id}`;

  interface WorkerProcess {
    proc: ChildProcess;
    out: string[];
    /** The extra executor it is connected to; undefined: the stack's own. */
    executor: ExtraService | undefined;
    /** Its executor was killed for good (a new one has its own port and worker). */
    retired: boolean;
  }
  const workers: WorkerProcess[] = [];

  async function startWorker(executor: ExtraService | undefined): Promise<void> {
    const url = executor ? `http://127.0.0.1:${executor.port}` : stack.executorUrl;
    const proc = spawn(process.execPath, [`${ROOT}test/dist/fixtures/flow-control-worker.js`], {
      env: { ...process.env, INGEST_URL: stack.ingestUrl, EXECUTOR_URL: url },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const w: WorkerProcess = { proc, out: [], executor, retired: false };
    let partial = "";
    proc.stdout!.on("data", (d: Buffer) => {
      const lines = (partial + d.toString()).split("\n");
      partial = lines.pop() ?? "";
      w.out.push(...lines);
    });
    proc.stderr!.on("data", (d: Buffer) => w.out.push(`stderr: ${d.toString()}`));
    workers.push(w);
    await eventually(async () => (w.out.includes("worker-ready") ? true : undefined), 20_000, "a worker to connect");
  }

  /** A step body's start or end, as a worker printed it. */
  interface Mark {
    begin: boolean;
    fn: string;
    key: string;
    run: string;
    /** Monotonic clock, ns. */
    at: bigint;
  }

  function marksOf(w: WorkerProcess, fn: string): Mark[] {
    return w.out
      .filter((l) => l.startsWith(`B ${fn} `) || l.startsWith(`E ${fn} `))
      .map((l) => {
        const [tag, f, key, run, at] = l.split(" ");
        return { begin: tag === "B", fn: f!, key: key!, run: run!, at: BigInt(at!) };
      });
  }

  const marks = (fn: string): Mark[] => workers.flatMap((w) => marksOf(w, fn));

  /** Runs with a body started and not ended in this worker. */
  function inProgress(w: WorkerProcess, fns: readonly string[]): Set<string> {
    const open = new Map<string, number>();
    for (const m of fns.flatMap((fn) => marksOf(w, fn))) open.set(m.run, (open.get(m.run) ?? 0) + (m.begin ? 1 : -1));
    return new Set([...open].filter(([, n]) => n > 0).map(([run]) => run));
  }

  /** Waits until every body of fn that started has ended, in every worker. */
  async function bodiesEnded(fn: string): Promise<void> {
    await eventually(async () => (workers.every((w) => inProgress(w, [fn]).size === 0) ? true : undefined), 20_000, `every ${fn} body to end`);
  }

  /** The first start of each run (ms on the monotonic clock), over every worker. */
  function firstStarts(fn: string): Map<string, { key: string; atMs: number }> {
    const first = new Map<string, { key: string; at: bigint }>();
    for (const m of marks(fn)) {
      if (!m.begin) continue;
      const f = first.get(m.run);
      if (!f || m.at < f.at) first.set(m.run, { key: m.key, at: m.at });
    }
    return new Map([...first].map(([run, f]) => [run, { key: f.key, atMs: Number(f.at) / 1e6 }]));
  }

  /**
   * Per key, the most distinct runs whose bodies executed at once, over
   * every worker. With `replacedBy` (a run to the run that replaced it), a
   * run does not count while the run that replaced it executes: it has been
   * told to stop, and its step may still be ending.
   */
  function mostRunsAtOnce(fn: string, replacedBy: ReadonlyMap<string, string> = new Map()): Map<string, number> {
    // At one instant, an end comes before a start.
    const sorted = marks(fn).sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : Number(a.begin) - Number(b.begin)));
    const active = new Map<string, Map<string, number>>();
    const peak = new Map<string, number>();
    for (const m of sorted) {
      const runs = active.get(m.key) ?? new Map<string, number>();
      active.set(m.key, runs);
      const n = (runs.get(m.run) ?? 0) + (m.begin ? 1 : -1);
      if (n === 0) runs.delete(m.run);
      else runs.set(m.run, n);
      const counted = [...runs.keys()].filter((run) => !runs.has(replacedBy.get(run) ?? "")).length;
      peak.set(m.key, Math.max(peak.get(m.key) ?? 0, counted));
    }
    return peak;
  }

  /**
   * SIGKILLs, once runs of `fns` are in progress, the executor whose worker
   * holds the most of them, and the second scheduler when asked, at the
   * same time; then starts them again. Returns the runs that were in
   * progress on the killed executor's worker, and when it was killed (ms on
   * the monotonic clock).
   */
  async function crash(fns: readonly string[], options: { scheduler: boolean }): Promise<{ running: Set<string>; atMs: number }> {
    // In the middle of the work: once some run is in progress.
    const busiest = await eventually(
      async () => {
        const live = workers.filter((w) => !w.retired);
        const b = live.reduce((x, y) => (inProgress(y, fns).size > inProgress(x, fns).size ? y : x));
        return inProgress(b, fns).size > 0 ? b : undefined;
      },
      60_000,
      "a run in progress to kill its executor",
    );
    const running = inProgress(busiest, fns);
    const atMs = Number(process.hrtime.bigint()) / 1e6;
    const executor = busiest.executor;
    await Promise.all([
      executor ? executor.kill("SIGKILL") : stack.kill("executor", "SIGKILL"),
      ...(options.scheduler ? [secondScheduler.kill("SIGKILL")] : []),
    ]);
    await Promise.all([
      (async () => {
        if (executor) {
          // A new extra executor has a port of its own: a new worker for it.
          busiest.retired = true;
          secondExecutor = await stack.startExtra("executor");
          await startWorker(secondExecutor);
        } else {
          // The worker reconnects to it by itself.
          await stack.startService("executor");
        }
      })(),
      (async () => {
        if (options.scheduler) secondScheduler = await stack.startExtra("scheduler");
      })(),
    ]);
    return { running, atMs };
  }

  async function send(events: Array<{ name: string; data: Record<string, unknown> }>): Promise<string[]> {
    const ids: string[] = [];
    for (let i = 0; i < events.length; i += 100) ids.push(...(await client.send(events.slice(i, i + 100))));
    return ids;
  }

  /** The one run of each event, once it has ended. */
  async function endedRuns(ids: readonly string[], timeoutMs: number): Promise<RunInfo[]> {
    const results = await Promise.all(ids.map((id) => client.waitForRuns(id, { timeoutMs })));
    return results.map((r, i) => {
      expect(r.done, `the runs of event ${ids[i]} ended: ${JSON.stringify(r.runs.map((x) => x.status))}`).toBe(true);
      expect(r.runs, `the runs of event ${ids[i]}`).toHaveLength(1);
      return r.runs[0]!;
    });
  }

  /** Waits until every event has its run (created, maybe not started). */
  async function runsCreated(ids: readonly string[]): Promise<void> {
    await eventually(
      async () => ((await Promise.all(ids.map((id) => client.listRunsOfEvent(id)))).every((r) => r.length === 1) ? true : undefined),
      60_000,
      "the runs of the events to be created",
    );
  }

  async function eventsSettled(): Promise<void> {
    // Events a killed scheduler held come back after the event consumer's ack wait (30 s).
    await eventually(async () => ((await stack.eventsSettled()) ? true : undefined), 60_000, "the schedulers to handle every event");
  }

  const ms = (d: Date | undefined) => d?.getTime() ?? Number.NaN;

  /** Runs as lines: id, status, created, started and ended (ms after the first was created), reason. */
  function timeline(runs: readonly RunInfo[]): string {
    const base = Math.min(...runs.map((r) => ms(r.createdAt)));
    return [...runs]
      .sort((x, y) => ms(x.createdAt) - ms(y.createdAt))
      .map((r) => `${r.id} ${r.status} created ${ms(r.createdAt) - base} started ${ms(r.startedAt) - base} ended ${ms(r.endedAt) - base} ${r.error?.message ?? ""}`)
      .join("\n");
  }

  beforeAll(async () => {
    await stack.start();
    secondScheduler = await stack.startExtra("scheduler");
    secondExecutor = await stack.startExtra("executor");
    client = new Stepwise({ appId: "flowcrash", url: stack.ingestUrl });
    await startWorker(undefined);
    await startWorker(secondExecutor);
  }, 60_000);

  afterAll(async () => {
    for (const w of workers) w.proc.kill("SIGKILL");
    client?.close();
    await stack.stop();
    rmSync(hold, { force: true });
  });

  it("throttle: 36 runs over 3 keys at 1 per second (burst 2), an executor and a scheduler killed while they are paced: no key starts faster than the generic cell rate, every run completes", async () => {
    const KEYS = ["ta", "tb", "tc"];
    const PER_KEY = 12;
    const LIMIT = 1;
    const BURST = 2;
    const EMISSION_MS = 1000 / LIMIT;
    // Runs of other keys first, so that the first starts measured do not
    // pay for the first dispatch of the function (which makes the first
    // start late, and the ones after it seem early).
    await endedRuns(await send(Array.from({ length: 6 }, (_, i) => ({ name: "throttled.go", data: { key: `warm${i % 2}`, i } }))), 20_000);
    const ids = await send(Array.from({ length: PER_KEY * KEYS.length }, (_, i) => ({ name: "throttled.go", data: { key: KEYS[i % KEYS.length]!, i } })));
    const measured = () => new Map([...firstStarts("throttled")].filter(([, s]) => KEYS.includes(s.key)));
    // Every run exists before the kill: the test is about the pacing, not about events a killed scheduler held.
    await eventsSettled();
    await eventually(async () => (measured().size >= 5 * KEYS.length ? true : undefined), 30_000, "runs to be paced");
    const { atMs: killedAtMs } = await crash(["throttled"], { scheduler: true });

    const runs = await endedRuns(ids, 100_000);
    expect(runs.filter((r) => r.status !== "COMPLETED").map((r) => `${r.id} ${r.status}`)).toEqual([]);
    await bodiesEnded("throttled");
    const starts = measured();
    expect([...starts.keys()].sort()).toEqual(runs.map((r) => r.id).sort());

    // The generic cell rate: a start every period / limit (1 s), up to
    // limit + burst (3) at once. For the i-th and j-th starts of a key (in
    // the order they started), j no sooner than (j - i - limit - burst + 1)
    // × 1 s after i: the j-th of a key no sooner than (j - 2) s after its
    // first, and no 4 starts within less than 1 s. Tolerance: 500 ms for
    // the way from a grant to the step body (publish, claim, dispatch),
    // longer for the first burst of a key than for a start alone, on a
    // machine as busy as two of each service (and a burst of 9 starts) make
    // it; one start too many is 1 s off. A start a crash made late only uses
    // up some of what the rate leaves to spare after it.
    const TOLERANCE_MS = 500;
    for (const key of KEYS) {
      const at = [...starts.values()].filter((s) => s.key === key).map((s) => s.atMs).sort((a, b) => a - b);
      expect(at, `starts of ${key}`).toHaveLength(PER_KEY);
      const tooSoon: string[] = [];
      for (let i = 0; i < at.length; i++) {
        for (let j = i + 1; j < at.length; j++) {
          const least = (j - i - LIMIT - BURST + 1) * EMISSION_MS - TOLERANCE_MS;
          if (at[j]! - at[i]! < least) tooSoon.push(`starts ${i} to ${j} of ${key}: ${(at[j]! - at[i]!).toFixed(1)} ms < ${least} ms`);
        }
      }
      expect(tooSoon).toEqual([]);
      // The kill came in the middle: many runs of each key first started after it.
      expect(at.filter((t) => t > killedAtMs).length, `starts of ${key} after the kill`).toBeGreaterThanOrEqual(5);
    }
  }, 150_000);

  it("singleton, skip and cancel: an executor and a scheduler killed mid-burst: one run per key at a time, every run ended as its mode says, none lost", async () => {
    const KEYS = ["s0", "s1", "s2", "s3", "s4", "s5"];
    const TICKS = 20;
    type Fn = "single-skip" | "single-cancel";
    const sent: Array<{ id: string; fn: Fn; key: string }> = [];
    let chaos: Promise<{ running: Set<string> }> | undefined;
    // Every 150 ms an event of each key for the skip function (whose body
    // lasts 300 ms), every 750 ms one for the cancel function (whose run
    // sleeps 2 s between two short steps). The kill comes after 1.5 s.
    for (let t = 0; t < TICKS; t++) {
      const batch: Array<{ fn: Fn; key: string }> = KEYS.map((key) => ({ fn: "single-skip", key }));
      if (t % 5 === 0) batch.push(...KEYS.map((key) => ({ fn: "single-cancel" as const, key })));
      const ids = await client.send(batch.map((b) => ({ name: `${b.fn}.go`, data: { key: b.key, t } })));
      ids.forEach((id, i) => sent.push({ id, ...batch[i]! }));
      if (t === 10) chaos = crash(["single-skip", "single-cancel"], { scheduler: true });
      await sleep(150);
    }
    const { running: killed } = await chaos!;

    // Events the killed scheduler held come back after the event consumer's ack wait (30 s).
    const runs = await endedRuns(
      sent.map((s) => s.id),
      100_000,
    );
    const all = sent.map((s, i) => ({ ...s, run: runs[i]! }));
    const runById = new Map(all.map((a) => [a.run.id, a]));
    await bodiesEnded("single-skip");
    await bodiesEnded("single-cancel");

    // Mode skip.
    const skip = all.filter((a) => a.fn === "single-skip");
    expect(skip.filter((a) => a.run.status !== "COMPLETED" && a.run.status !== "SKIPPED").map((a) => `${a.run.id} ${a.run.status}`)).toEqual([]);
    const admitted = skip.filter((a) => a.run.status === "COMPLETED");
    // The runs that executed are exactly the ones not skipped; those the kill interrupted completed.
    expect(new Set(marks("single-skip").map((m) => m.run))).toEqual(new Set(admitted.map((a) => a.run.id)));
    for (const run of killed) if (runById.get(run)?.fn === "single-skip") expect(runById.get(run)!.run.status, `run ${run}`).toBe("COMPLETED");
    for (const [key, peak] of mostRunsAtOnce("single-skip")) expect(peak, `runs of ${key} executing at once`).toBe(1);
    for (const key of KEYS) {
      const mine = admitted.filter((a) => a.key === key).sort((a, b) => ms(a.run.startedAt) - ms(b.run.startedAt));
      // Each key ran, and was skipped: 20 events at 150 ms for a body of 300 ms.
      expect(mine.length, `runs of ${key} not skipped`).toBeGreaterThan(0);
      expect(mine.length, `runs of ${key} not skipped`).toBeLessThan(TICKS);
      // A run of a key started only once the one before it had ended (the journal's clock).
      for (let i = 1; i < mine.length; i++) {
        expect(ms(mine[i - 1]!.run.endedAt), `run ${mine[i - 1]!.run.id} ended before ${mine[i]!.run.id} started`).toBeLessThanOrEqual(ms(mine[i]!.run.startedAt));
      }
    }
    for (const s of skip.filter((a) => a.run.status === "SKIPPED")) {
      const m = /^singleton: run (\S+) of the same key has not ended$/.exec(s.run.error?.message ?? "");
      expect(m, `reason of ${s.run.id}: ${s.run.error?.message}`).not.toBeNull();
      const holder = runById.get(m![1]!);
      // The run it names is of its key, was not skipped, and had not ended
      // when the skip was decided (1 s for the statements' clocks).
      expect(holder, `the run named by ${s.run.id}`).toMatchObject({ fn: "single-skip", key: s.key, run: { status: "COMPLETED" } });
      expect(ms(holder!.run.createdAt)).toBeLessThanOrEqual(ms(s.run.endedAt) + 1_000);
      expect(ms(s.run.endedAt)).toBeLessThanOrEqual(ms(holder!.run.endedAt) + 1_000);
      expect(s.run.startedAt).toBeUndefined();
    }

    // Mode cancel.
    const cancel = all.filter((a) => a.fn === "single-cancel");
    expect(cancel.filter((a) => a.run.status !== "COMPLETED" && a.run.status !== "CANCELLED").map((a) => `${a.run.id} ${a.run.status}`)).toEqual([]);
    expect(cancel.filter((a) => a.run.status === "CANCELLED").length, "runs replaced").toBeGreaterThan(0);
    const replacedBy = new Map<string, string>();
    for (const c of cancel.filter((a) => a.run.status === "CANCELLED")) {
      const m = /^singleton: replaced by run (\S+)$/.exec(c.run.error?.message ?? "");
      expect(m, `reason of ${c.run.id}: ${c.run.error?.message}`).not.toBeNull();
      expect(runById.get(m![1]!), `the run that replaced ${c.run.id}`).toMatchObject({ fn: "single-cancel", key: c.key });
      replacedBy.set(c.run.id, m![1]!);
    }
    // One run of a key executes at a time, but for the step of a run being
    // replaced, which the cancel stops as the new run starts.
    for (const [key, peak] of mostRunsAtOnce("single-cancel", replacedBy)) expect(peak, `runs of ${key} executing at once`).toBe(1);
    // A run that completed executed both its steps.
    const begun = marks("single-cancel").filter((m) => m.begin);
    for (const c of cancel.filter((a) => a.run.status === "COMPLETED")) {
      expect(begun.filter((m) => m.run === c.run.id).length, `steps of run ${c.run.id} executed`).toBeGreaterThanOrEqual(2);
    }
    for (const key of KEYS) {
      const mine = cancel.filter((a) => a.key === key);
      expect(mine.filter((a) => a.run.status === "COMPLETED").length, `runs of ${key} completed`).toBeGreaterThan(0);
      // In the journal, two runs of a key that had started were under way
      // at once only while one replaced the other, or for the moment a run
      // that was finishing took to complete as the next was admitted (500 ms).
      const started = mine.filter((a) => a.run.startedAt).sort((a, b) => ms(a.run.startedAt) - ms(b.run.startedAt));
      for (let i = 1; i < started.length; i++) {
        const [prev, next] = [started[i - 1]!.run, started[i]!.run];
        if (ms(prev.endedAt) <= ms(next.startedAt)) continue;
        const replacing = replacedBy.get(prev.id) === next.id || replacedBy.get(next.id) === prev.id;
        const overlap = ms(prev.endedAt) - ms(next.startedAt);
        expect(replacing || overlap <= 500, `run ${prev.id} ended ${overlap} ms after ${next.id} started; the runs of ${key}:\n${timeline(mine.map((x) => x.run))}`).toBe(true);
      }
    }
  }, 150_000);

  it("rate limit and idempotency: an executor killed while the runs they let through execute: 10 runs over 30 keys, each once, none lost", async () => {
    // 30 keys: the rate limit (10 per 10 min) lets 10 runs through, skips 20.
    const first = await send(Array.from({ length: 30 }, (_, i) => ({ name: "rate-once.go", data: { key: `r${i}` } })));
    await eventually(
      async () => {
        const rows = await stack.query<{ n: number }>("SELECT count(*)::int AS n FROM runs WHERE function_id = 'rate-once' AND status = 'SKIPPED'");
        const running = workers.reduce((n, w) => n + inProgress(w, ["rate-once"]).size, 0);
        return rows[0]!.n === 20 && running >= 4 ? true : undefined;
      },
      60_000,
      "20 runs skipped and the others under way",
    );
    const { running: killed } = await crash(["rate-once"], { scheduler: false });
    // Each key again: the 10 that ran are taken, the 20 others still over the rate.
    const again = await send(Array.from({ length: 30 }, (_, i) => ({ name: "rate-once.go", data: { key: `r${i}` } })));

    const ids = [...first, ...again];
    const runs = await endedRuns(ids, 100_000);
    const keyOf = (i: number) => `r${i % 30}`;
    const completed = runs.map((r, i) => ({ r, key: keyOf(i) })).filter((x) => x.r.status === "COMPLETED");
    expect(completed).toHaveLength(10);
    expect(runs.filter((r) => r.status === "SKIPPED")).toHaveLength(50);
    expect(new Set(completed.map((c) => c.key)).size).toBe(10);
    expect(completed.every((c) => first.includes(c.r.event.id))).toBe(true);
    const takenBy = new Map(completed.map((c) => [c.key, c.r.id]));
    const reasons = runs.map((r, i) => ({ r, key: keyOf(i) })).filter((x) => x.r.status === "SKIPPED");
    const byIdempotency = reasons.filter((x) => x.r.error?.message.startsWith("idempotency:"));
    expect(byIdempotency).toHaveLength(10);
    for (const x of byIdempotency) expect(x.r.error?.message).toBe(`idempotency: run ${takenBy.get(x.key)} took the key in the last 24 hours`);
    for (const x of reasons.filter((y) => !y.r.error?.message.startsWith("idempotency:"))) {
      expect(x.r.error?.message).toMatch(/^rateLimit: 10 runs already started in the window/);
    }

    await bodiesEnded("rate-once");
    // Only the runs let through executed; the ones on the killed executor started again and completed.
    const executed = marks("rate-once");
    expect(new Set(executed.map((m) => m.run))).toEqual(new Set(completed.map((c) => c.r.id)));
    for (const run of killed) {
      expect(completed.some((c) => c.r.id === run), `run ${run} completed`).toBe(true);
      expect(executed.filter((m) => m.begin && m.run === run).length, `starts of run ${run}`).toBeGreaterThanOrEqual(2);
    }
  }, 150_000);

  it("priority: queued runs of a higher priority start before lower ones waiting for the same slot, after a SIGKILL of an executor and a scheduler", async () => {
    // Per key, a limit of 1: a blocker holds the slot; 3 low (priority 0)
    // runs, then 3 medium (30) are queued before the crash, 3 high (60)
    // after it. Oldest first would start the low ones first.
    const KEYS = ["p0", "p1", "p2"];
    const events = (level: string, p: number) =>
      KEYS.flatMap((key) => [0, 1, 2].map((i) => ({ name: "prioritized.go", data: { key, p, level, name: `${level}-${i}` } })));
    const blockers = await send(KEYS.map((key) => ({ name: "prioritized.go", data: { key, p: 0, level: "blocker", hold } })));
    await eventually(
      async () => (new Set([...firstStarts("prioritized").values()].map((s) => s.key)).size === KEYS.length ? true : undefined),
      60_000,
      "the blockers to start",
    );
    const low = await send(events("low", 0));
    await runsCreated(low);
    const medium = await send(events("medium", 30));
    await runsCreated(medium);
    await eventsSettled();
    const { running: killed } = await crash(["prioritized"], { scheduler: true });
    const high = await send(events("high", 60));
    const waiting = async (n: number) =>
      eventually(
        async () => {
          const rows = await stack.query<{ n: number }>("SELECT count(*)::int AS n FROM runs WHERE function_id = 'prioritized' AND slot = 'waiting'");
          return rows[0]!.n === n ? true : undefined;
        },
        90_000,
        `${n} runs waiting for a slot`,
      );
    // The blockers that were on the killed executor are back on a worker, still holding their slot.
    await eventually(
      async () => {
        const starts = marks("prioritized").filter((m) => m.begin);
        return [...killed].every((run) => starts.filter((m) => m.run === run).length >= 2) ? true : undefined;
      },
      90_000,
      "the killed blockers to start again",
    );
    // Every one of them waits for its key's slot before it frees.
    await waiting(27);
    writeFileSync(hold, "");

    const ids = [...blockers, ...low, ...medium, ...high];
    const runs = await endedRuns(ids, 60_000);
    expect(runs.filter((r) => r.status !== "COMPLETED").map((r) => `${r.id} ${r.status}`)).toEqual([]);
    await bodiesEnded("prioritized");
    const levelOf = new Map(runs.map((r, i) => [r.id, i < blockers.length ? "blocker" : i < blockers.length + low.length ? "low" : i < blockers.length + low.length + medium.length ? "medium" : "high"]));
    const starts = firstStarts("prioritized");
    for (const key of KEYS) {
      const order = [...starts]
        .filter(([, s]) => s.key === key)
        .sort(([, a], [, b]) => a.atMs - b.atMs)
        .map(([run]) => levelOf.get(run));
      expect(order, `order of ${key}`).toEqual(["blocker", "high", "high", "high", "medium", "medium", "medium", "low", "low", "low"]);
      // Nothing of a key started before its blocker's last execution ended: the slot survived the kill.
      const blocker = runs[KEYS.indexOf(key)]!.id;
      const blockerEnd = Math.max(...marks("prioritized").filter((m) => !m.begin && m.run === blocker).map((m) => Number(m.at) / 1e6));
      const others = [...starts].filter(([run, s]) => s.key === key && run !== blocker).map(([, s]) => s.atMs);
      expect(Math.min(...others), `first start after the blocker of ${key}`).toBeGreaterThanOrEqual(blockerEnd);
    }
    for (const [key, peak] of mostRunsAtOnce("prioritized")) expect(peak, `runs of ${key} executing at once`).toBe(1);
  }, 150_000);

  // Fails on the engine of this commit: the slot keeper commits the new
  // run's admission (slot 'admitted') and cancels the runs it replaces in a
  // statement after it; a scheduler that dies between the two leaves the old
  // run going, and no later round cancels it (the new run is admitted
  // already). The old run completes next to the new one.
  it("singleton cancel: a scheduler killed after it admitted a run and before it cancelled the one that run replaces: the old run is still cancelled", async () => {
    // The old run sleeps (8 s). The test holds its row, so that the cancel
    // of the scheduler that admits the new run waits in Postgres; then that
    // scheduler dies (both are killed, whichever it was) before its cancel
    // is carried out: its statement is ended with its connection, as if it
    // had never been sent. The schedulers come back.
    const data = { key: "gap", sleepMs: 8_000 };
    const [a] = await client.send({ name: "single-cancel.go", data });
    const old = await runOfEventIn(client, a!, "WAITING");
    const lock = new pg.Client({ connectionString: stack.databaseUrl, options: `-c search_path=${stack.schema}` });
    await lock.connect();
    let b: string | undefined;
    try {
      await lock.query("BEGIN");
      await lock.query("SELECT 1 FROM runs WHERE id = $1 FOR UPDATE", [old.id]);
      const holder = (await lock.query<{ pid: number }>("SELECT pg_backend_pid() AS pid")).rows[0]!.pid;
      [b] = await client.send({ name: "single-cancel.go", data });
      const blockedBackends = async () =>
        (
          await stack.query<{ pid: number }>(
            "SELECT pid FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid)) AND application_name = 'stepwise-scheduler'",
            [holder],
          )
        ).map((r) => r.pid);
      const blocked = await eventually(async () => ((await blockedBackends()).length > 0 ? await blockedBackends() : undefined), 20_000, "a scheduler's cancel of the old run to wait for its row");
      await Promise.all([stack.kill("scheduler", "SIGKILL"), secondScheduler.kill("SIGKILL")]);
      for (const pid of blocked) await stack.query("SELECT pg_terminate_backend($1)", [pid]);
      await eventually(
        async () => ((await stack.query("SELECT 1 FROM pg_stat_activity WHERE pid = ANY($1)", [blocked])).length === 0 ? true : undefined),
        10_000,
        "the statements of the killed scheduler to be gone",
      );
    } finally {
      await lock.query("COMMIT");
      await lock.end();
    }
    await Promise.all([stack.startService("scheduler"), (async () => (secondScheduler = await stack.startExtra("scheduler")))()]);
    const [oldEnd, fresh] = await endedRuns([a!, b!], 60_000);
    expect(fresh!.status).toBe("COMPLETED");
    expect(oldEnd, `the run replaced; the runs:\n${timeline([oldEnd!, fresh!])}`).toMatchObject({
      id: old.id,
      status: "CANCELLED",
      error: { message: `singleton: replaced by run ${fresh!.id}` },
    });
  }, 120_000);
});
