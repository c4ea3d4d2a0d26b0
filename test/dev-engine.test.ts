import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { Stepwise, Worker } from "@stepwise/sdk";
import { CLI, eventually } from "./support/stack.js";

/** Starts `stepwise dev` as a user would and resolves with its URL. */
function startDev(args: string[]): Promise<{ proc: ChildProcess; url: string }> {
  const proc = spawn(process.execPath, [CLI, "dev", "--port", "0", ...args], {
    env: { ...process.env, LOG_LEVEL: "warn" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  return new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`stepwise dev did not start: ${out}`)), 30_000);
    const onData = (d: Buffer) => {
      out += d.toString();
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({ proc, url: m[1]! });
      }
    };
    proc.stdout!.on("data", onData);
    proc.stderr!.on("data", onData);
    proc.once("exit", (code) => reject(new Error(`stepwise dev exited ${code}: ${out}`)));
  });
}

async function stop(proc: ChildProcess, signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise((r) => proc.once("exit", r));
  proc.kill(signal);
  await exited;
}

// The embedded default: one process, PGlite, the in-process bus.
describe("stepwise dev", () => {
  const dir = mkdtempSync(join(tmpdir(), "stepwise-dev-"));
  const procs: ChildProcess[] = [];
  const workers: Worker[] = [];

  afterAll(async () => {
    await Promise.all(workers.map((w) => w.kill()));
    await Promise.all(procs.map((p) => stop(p, "SIGKILL")));
    rmSync(dir, { recursive: true, force: true });
  });

  function orderFunction(client: Stepwise, counter: { body: number; steps: string[] }, hold?: Promise<void>) {
    return client.createFunction({ id: "order-processing", triggers: [{ event: "order.placed" }] }, async ({ event, step }) => {
      counter.body++;
      const id = String(event.data["orderId"]);
      const p = await step.run("process-payment", () => (counter.steps.push("process-payment"), { paid: id }));
      await step.run("check-inventory", () => (counter.steps.push("check-inventory"), { inStock: true }));
      await step.run("schedule-shipment", async () => {
        counter.steps.push("schedule-shipment");
        await hold;
        return { shipment: `ship_${id}` };
      });
      await step.run("send-notification", () => (counter.steps.push("send-notification"), { sent: true }));
      return p;
    });
  }

  it("runs the order workflow end to end and journals the four steps", async () => {
    const { proc, url } = await startDev(["--memory"]);
    procs.push(proc);
    const client = new Stepwise({ appId: "shop", url });
    const counter = { body: 0, steps: [] as string[] };
    const worker = new Worker({ url, functions: [orderFunction(client, counter)], handleSignals: false });
    workers.push(worker);
    await worker.connect();

    const [eventId] = await client.send({ name: "order.placed", data: { orderId: "d-1" } });
    const run = await eventually(async () => {
      const [r] = await client.listRunsOfEvent(eventId!);
      return r?.status === "COMPLETED" ? client.getRun(r.id) : undefined;
    });
    expect(run.steps.map((s) => s.id)).toEqual(["process-payment", "check-inventory", "schedule-shipment", "send-notification"]);
    expect(run.steps[2]!.output).toEqual({ shipment: "ship_d-1" });
    expect(run.output).toEqual({ paid: "d-1" });
    expect(counter).toEqual({ body: 1, steps: ["process-payment", "check-inventory", "schedule-shipment", "send-notification"] });
    await worker.close();
    await stop(proc);
    expect(proc.exitCode).toBe(0);
  });

  it("keeps the journal in its data folder across a crash and finishes the run after restart", async () => {
    const first = await startDev(["--dir", dir]);
    procs.push(first.proc);
    const client = new Stepwise({ appId: "shop", url: first.url });
    const counter = { body: 0, steps: [] as string[] };
    let entered!: () => void;
    const inStep3 = new Promise<void>((r) => (entered = r));
    const never = new Promise<void>(() => {});
    const fn1 = client.createFunction({ id: "order-processing", triggers: [{ event: "order.placed" }] }, async ({ step }) => {
      await step.run("process-payment", () => (counter.steps.push("process-payment"), 1));
      await step.run("check-inventory", () => (counter.steps.push("check-inventory"), 2));
      await step.run("schedule-shipment", () => (entered(), never));
      return "unreachable";
    });
    const w1 = new Worker({ url: first.url, functions: [fn1], handleSignals: false, maxReconnectDelayMs: 200 });
    workers.push(w1);
    await w1.connect();
    const [eventId] = await client.send({ name: "order.placed", data: { orderId: "d-2" } });
    await inStep3;
    await w1.kill();
    await stop(first.proc, "SIGKILL");

    const second = await startDev(["--dir", dir]);
    procs.push(second.proc);
    const client2 = new Stepwise({ appId: "shop", url: second.url });
    const counter2 = { body: 0, steps: [] as string[] };
    const w2 = new Worker({ url: second.url, functions: [orderFunction(client2, counter2)], handleSignals: false });
    workers.push(w2);
    await w2.connect();
    const run = await eventually(async () => {
      const [r] = await client2.listRunsOfEvent(eventId!);
      return r?.status === "COMPLETED" ? client2.getRun(r.id) : undefined;
    }, 40_000, "the run to complete after the restart");
    // Steps 1-2 were journaled before the crash: only 3 and 4 ran after it.
    expect(counter2.steps).toEqual(["schedule-shipment", "send-notification"]);
    expect(run.steps.map((s) => s.id)).toEqual(["process-payment", "check-inventory", "schedule-shipment", "send-notification"]);
    expect(run.output).toBe(1);
  });
});
