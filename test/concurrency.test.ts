import { spawn, type ChildProcess } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Stepwise } from "@stepwise/sdk";
import { ROOT, Stack, eventually, type ExtraService } from "./support/stack.js";

// Concurrency limits on the real stack: two executors, two schedulers, and
// two worker processes (one on each executor) serving a function limited
// to 3 runs at once per key. The workers print when each step body starts
// and ends on the machine's monotonic clock; the test merges what both saw.
describe("concurrency limits across executors and schedulers", () => {
  const stack = new Stack();
  let secondExecutor: ExtraService;
  let secondScheduler: ExtraService;
  const workers: Array<{ proc: ChildProcess; out: string[] }> = [];
  let client: Stepwise;

  function startWorker(executorUrl: string) {
    const proc = spawn(process.execPath, [`${ROOT}test/dist/fixtures/concurrency-worker.js`], {
      env: { ...process.env, INGEST_URL: stack.ingestUrl, EXECUTOR_URL: executorUrl },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const w = { proc, out: [] as string[] };
    let partial = "";
    proc.stdout!.on("data", (d: Buffer) => {
      const lines = (partial + d.toString()).split("\n");
      partial = lines.pop() ?? "";
      w.out.push(...lines);
    });
    proc.stderr!.on("data", (d: Buffer) => w.out.push(`stderr: ${d.toString()}`));
    workers.push(w);
    return eventually(async () => (w.out.includes("worker-ready") ? w : undefined), 20_000, "a worker to connect");
  }

  /** Lines of every worker that start with `tag`, split. */
  function lines(tag: string): string[][] {
    return workers.flatMap((w) => w.out.filter((l) => l.startsWith(`${tag} `)).map((l) => l.split(" ")));
  }

  /** The most bodies of each key that ran at once, over every worker, and how many started. */
  function peaks(): { peak: Map<string, number>; started: number } {
    const marks = [...lines("B").map((p) => ({ key: p[1]!, at: BigInt(p[3]!), d: 1 })), ...lines("E").map((p) => ({ key: p[1]!, at: BigInt(p[3]!), d: -1 }))];
    // At one instant, an end comes before a start.
    marks.sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : a.d - b.d));
    const active = new Map<string, number>();
    const peak = new Map<string, number>();
    for (const m of marks) {
      const n = (active.get(m.key) ?? 0) + m.d;
      active.set(m.key, n);
      peak.set(m.key, Math.max(peak.get(m.key) ?? 0, n));
    }
    return { peak, started: lines("B").length };
  }

  async function sendAll(n: number, tag: string): Promise<string[]> {
    const ids: string[] = [];
    for (let i = 0; i < n; i += 100) {
      const batch = Array.from({ length: Math.min(100, n - i) }, (_, j) => ({ name: "limited.go", data: { key: `${tag}${(i + j) % 10}` } }));
      ids.push(...(await client.send(batch)));
    }
    return ids;
  }

  async function allCompleted(ids: readonly string[], timeoutMs: number): Promise<void> {
    await eventually(
      async () => {
        const results = await Promise.all(ids.map((id) => client.waitForRuns(id, { timeoutMs: 1_000 })));
        return results.every((r) => r.done && r.runs.length === 1 && r.runs[0]!.status === "COMPLETED") ? true : undefined;
      },
      timeoutMs,
      "every run to complete",
    );
  }

  beforeAll(async () => {
    await stack.start();
    secondScheduler = await stack.startExtra("scheduler");
    secondExecutor = await stack.startExtra("executor");
    client = new Stepwise({ appId: "limits", url: stack.ingestUrl });
    await startWorker(stack.executorUrl);
    await startWorker(`http://127.0.0.1:${secondExecutor.port}`);
  }, 60_000);

  afterAll(async () => {
    for (const w of workers) w.proc.kill("SIGKILL");
    client?.close();
    await stack.stop();
  });

  it("300 runs over 10 keys with a limit of 3: no key ever runs more than 3 bodies at once, and every run completes", async () => {
    const ids = await sendAll(300, "a");
    await allCompleted(ids, 90_000);
    const { peak, started } = peaks();
    expect(started).toBe(300);
    expect([...peak.keys()].sort()).toEqual(Array.from({ length: 10 }, (_, i) => `a${i}`).sort());
    for (const [key, p] of peak) expect(p, `key ${key}`).toBeLessThanOrEqual(3);
    // The limit is what held them back: keys did reach it.
    expect(Math.max(...peak.values())).toBe(3);
    // Both workers, so both executors, ran bodies.
    for (const w of workers) expect(w.out.filter((l) => l.startsWith("B ")).length).toBeGreaterThan(0);
  }, 120_000);

  it("a run that sleeps gives its slot back: the next run of its key starts and ends during the sleep", async () => {
    await client.send({ name: "sleepy.go", data: { key: "s", name: "first", sleep: true } });
    await eventually(async () => (lines("S").some((l) => l[1] === "first") ? true : undefined), 20_000, "the first run to start");
    await client.send({ name: "sleepy.go", data: { key: "s", name: "second" } });
    await eventually(async () => (lines("D").some((l) => l[1] === "second") ? true : undefined), 20_000, "the second run to end");
    // The first is still asleep when the second has ended.
    expect(lines("D").some((l) => l[1] === "first")).toBe(false);
    await eventually(async () => (lines("D").some((l) => l[1] === "first") ? true : undefined), 20_000, "the first run to wake and end");
  });

  it("SIGKILL of an executor and of a scheduler in the middle: no key exceeds its limit, no run is lost", async () => {
    for (const w of workers) w.out.length = 0;
    const ids = await sendAll(200, "b");
    await eventually(async () => (lines("B").length >= 30 ? true : undefined), 30_000, "runs to be under way");
    await Promise.all([stack.kill("executor", "SIGKILL"), secondScheduler.kill("SIGKILL")]);
    // The first worker's executor is gone: it reconnects once it is back.
    await stack.startService("executor");
    await allCompleted(ids, 120_000);
    const { peak } = peaks();
    for (const [key, p] of peak) expect(p, `key ${key}`).toBeLessThanOrEqual(3);
    expect(new Set(lines("E").map((l) => l[2])).size).toBe(200);
  }, 180_000);
});
