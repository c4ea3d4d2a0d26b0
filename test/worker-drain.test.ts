import { spawn } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Stepwise } from "@stepwise/sdk";
import { ROOT, Stack, eventually } from "./support/stack.js";

// SIGTERM to a worker process: it takes no new runs, finishes the one it
// holds, then exits 0; the run was never handed to anyone else.
describe("worker drain on SIGTERM", () => {
  const stack = new Stack();

  beforeAll(async () => {
    await stack.start();
  });

  afterAll(async () => {
    await stack.stop();
  });

  it("finishes the run in progress before it exits", async () => {
    const proc = spawn(process.execPath, [`${ROOT}test/dist/fixtures/drain-worker.js`], {
      env: { ...process.env, INGEST_URL: stack.ingestUrl, EXECUTOR_URL: stack.executorUrl },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    proc.stdout.on("data", (d: Buffer) => (out += d.toString()));
    proc.stderr.on("data", (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((r) => proc.once("exit", (code) => r(code)));
    await eventually(async () => (out.includes("worker-ready") ? true : undefined), 15_000, "the worker to connect");

    const client = new Stepwise({ appId: "drain", url: stack.ingestUrl });
    const [eventId] = await client.send({ name: "drain.go", data: {} });
    await eventually(async () => (out.includes("in-slow-step") ? true : undefined), 15_000, "the slow step to start");
    proc.kill("SIGTERM");
    expect(await exited).toBe(0);

    const [run] = await client.listRunsOfEvent(eventId!);
    expect(run?.status).toBe("COMPLETED");
    expect(run!.output).toBe(proc.pid);
    expect(run!.attempts).toBe(1);
    const full = await client.getRun(run!.id);
    expect(full.steps.map((s) => s.id)).toEqual(["one", "slow", "three"]);
  });
});
