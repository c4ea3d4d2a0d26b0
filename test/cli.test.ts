import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Stepwise, Worker } from "@stepwise/sdk";
import { CLI, Stack, eventually } from "./support/stack.js";

// The operator's commands of the stepwise CLI, end to end against the real
// stack (ingest, scheduler, executor as processes on real NATS and Postgres).
describe("stepwise runs, send and functions", () => {
  const stack = new Stack();
  let worker: Worker;
  let client: Stepwise;

  /** Runs the CLI; resolves with its exit code and output, whatever the code. */
  async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    try {
      const { stdout, stderr } = await promisify(execFile)(process.execPath, [CLI, ...args, "--url", stack.ingestUrl]);
      return { code: 0, stdout, stderr };
    } catch (err) {
      const e = err as { code?: number; stdout?: string; stderr?: string };
      return { code: e.code ?? -1, stdout: e.stdout ?? "", stderr: e.stderr ?? "" };
    }
  }

  beforeAll(async () => {
    await stack.start();
    client = new Stepwise({ appId: "ops", url: stack.ingestUrl });
    const order = client.createFunction({ id: "order", triggers: [{ event: "order.placed" }], retries: 2 }, async ({ event, step }) => {
      const paid = await step.run("charge", () => ({ total: event.data["total"] }));
      await step.run("ship", () => "shipped");
      return paid;
    });
    const napper = client.createFunction({ id: "napper", triggers: [{ event: "nap" }, { cron: "0 0 1 1 *" }] }, async ({ step }) => {
      await step.sleep("nap", "1h");
    });
    worker = new Worker({ url: stack.executorUrl, functions: [order, napper], handleSignals: false });
    await worker.connect();
  });

  afterAll(async () => {
    await worker?.close();
    client?.close();
    await stack.stop();
  });

  it("send prints the event id, and runs list and runs get show the run and its step timeline", async () => {
    const sent = await cli("send", "order.placed", "--data", '{"total":42}');
    expect(sent.code).toBe(0);
    const eventId = sent.stdout.trim();
    expect(eventId).toMatch(/^[0-9a-f-]{36}$/);
    const { runs } = await client.waitForRuns(eventId, { timeoutMs: 20_000 });
    const runId = runs[0]!.id;

    const list = await cli("runs", "list", "--app", "ops", "--function", "order", "--status", "completed");
    expect(list.code).toBe(0);
    const [head, ...rows] = list.stdout.trim().split("\n");
    expect(head).toMatch(/^RUN\s+STATUS\s+FUNCTION\s+APP\s+EVENT\s+CREATED\s+DURATION$/);
    expect(rows.find((r) => r.startsWith(runId))).toMatch(/COMPLETED\s+order\s+ops\s+order\.placed/);

    const get = await cli("runs", "get", runId);
    expect(get.code).toBe(0);
    expect(get.stdout).toContain(`run       ${runId}`);
    expect(get.stdout).toContain("status    COMPLETED");
    expect(get.stdout).toContain('output    {"total":42}');
    expect(get.stdout).toMatch(/STEP\s+ATTEMPT\s+DURATION\s+STATUS\s+OUTPUT OR ERROR/);
    expect(get.stdout).toMatch(/charge:0\s+1\s+\d+ ms\s+ok\s+\{"total":42\}/);
    expect(get.stdout).toMatch(/ship:0\s+1\s+\d+ ms\s+ok\s+"shipped"/);

    const asJson = JSON.parse((await cli("runs", "get", runId, "--json")).stdout) as { run: { id: string; status: string; steps: unknown[] } };
    expect(asJson.run).toMatchObject({ id: runId, status: "RUN_STATUS_COMPLETED" });
    expect(asJson.run.steps).toHaveLength(2);
    const listJson = JSON.parse((await cli("runs", "list", "--app", "ops", "--json")).stdout) as { runs: Array<{ id: string }> };
    expect(listJson.runs.map((r) => r.id)).toContain(runId);
    const sentJson = JSON.parse((await cli("send", "order.placed", "--id", "cli-fixed-id", "--json")).stdout) as { ids: string[] };
    expect(sentJson.ids).toEqual(["cli-fixed-id"]);
  });

  it("runs rerun starts a new run, and --from-step replays from a step", async () => {
    const eventId = (await cli("send", "order.placed", "--data", '{"total":5}')).stdout.trim();
    const { runs } = await client.waitForRuns(eventId, { timeoutMs: 20_000 });
    const runId = runs[0]!.id;
    const rerun = await cli("runs", "rerun", runId);
    expect(rerun.code).toBe(0);
    const rerunId = /as ([0-9a-f-]{36})$/.exec(rerun.stdout.trim())?.[1];
    expect(rerunId).toBeDefined();
    const replay = await cli("runs", "rerun", runId, "--from-step", "ship:0", "--json");
    expect(replay.code).toBe(0);
    const replayRun = (JSON.parse(replay.stdout) as { run: { id: string; originRunId: string; originStepKey: string } }).run;
    expect(replayRun).toMatchObject({ originRunId: runId, originStepKey: "ship:0" });
    for (const id of [rerunId!, replayRun.id]) {
      await eventually(async () => ((await client.getRun(id)).status === "COMPLETED" ? true : undefined), 20_000, `run ${id}`);
    }
    const get = await cli("runs", "get", replayRun.id);
    expect(get.stdout).toContain(`from      ${runId} (replayed from ship:0)`);
  });

  it("runs rerun --app --function reruns every run of a function by status", async () => {
    const eventId = (await cli("send", "order.placed", "--data", '{"total":9}')).stdout.trim();
    await client.waitForRuns(eventId, { timeoutMs: 20_000 });
    const res = await cli("runs", "rerun", "--app", "ops", "--function", "order", "--status", "completed", "--if", "int(event.data.total) == 9");
    expect(res).toMatchObject({ code: 0, stdout: "started 1 run\n" });
    await eventually(async () => ((await client.listRunsOfEvent(eventId)).length === 2 ? true : undefined), 20_000, "the rerun");
  });

  it("runs cancel cancels one run, or every run of a function by status", async () => {
    const one = (await cli("send", "nap")).stdout.trim();
    const others = [(await cli("send", "nap")).stdout.trim(), (await cli("send", "nap")).stdout.trim()];
    const waiting = async (eventId: string) =>
      eventually(async () => {
        const [r] = await client.listRunsOfEvent(eventId);
        return r?.status === "WAITING" ? r : undefined;
      }, 20_000, "a waiting run");
    const run = await waiting(one);
    for (const e of others) await waiting(e);
    const cancelled = await cli("runs", "cancel", run.id, "--reason", "by hand");
    expect(cancelled).toMatchObject({ code: 0, stdout: `cancelled ${run.id}\n` });
    expect((await client.getRun(run.id)).error?.message).toBe("by hand");
    const bulk = await cli("runs", "cancel", "--app", "ops", "--function", "napper", "--status", "waiting");
    expect(bulk).toMatchObject({ code: 0, stdout: "cancelled 2 runs\n" });
    for (const e of others) expect((await client.listRunsOfEvent(e))[0]?.status).toBe("CANCELLED");
  });

  it("functions list shows each function with its triggers and retries", async () => {
    const res = await cli("functions", "list", "--app", "ops");
    expect(res.code).toBe(0);
    const lines = res.stdout.trim().split("\n");
    expect(lines[0]).toMatch(/^APP\s+FUNCTION\s+TRIGGERS\s+RETRIES$/);
    expect(lines.find((l) => /\sorder\s/.test(l))).toMatch(/^ops\s+order\s+order\.placed\s+2$/);
    expect(lines.find((l) => /\snapper\s/.test(l))).toMatch(/^ops\s+napper\s+nap; cron 0 0 1 1 \*\s+default$/);
    const asJson = JSON.parse((await cli("functions", "list", "--json")).stdout) as { functions: Array<{ appId: string; functionId: string }> };
    expect(asJson.functions.filter((f) => f.appId === "ops").map((f) => f.functionId)).toEqual(["napper", "order"]);
  });

  it("bad arguments exit 2 with a message and the usage; a refused call exits 1 with the server's code and message", async () => {
    for (const args of [["runs", "lst"], ["runs", "get"], ["runs", "list", "--status", "asleep"], ["send", "x", "--data", "[1]"], ["runs", "list", "--bogus"]]) {
      const res = await cli(...args);
      expect(res.code, args.join(" ")).toBe(2);
      expect(res.stderr, args.join(" ")).toMatch(/^stepwise: .+\n\nUsage:/);
    }
    const unknown = await cli("runs", "get", "00000000-0000-4000-8000-000000000000");
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toBe('stepwise: not_found: run "00000000-0000-4000-8000-000000000000" not found\n');
    const badSend = await cli("send", "");
    expect(badSend.code).toBe(1);
    expect(badSend.stderr).toMatch(/^stepwise: invalid_argument: events\[0\]\.name/);
    for (const help of [["runs", "--help"], ["send", "--help"], ["functions", "--help"], ["runs", "get", "--help"]]) {
      const res = await cli(...help);
      expect(res.code, help.join(" ")).toBe(0);
      expect(res.stdout, help.join(" ")).toMatch(/^Usage:/);
    }
  });
});
