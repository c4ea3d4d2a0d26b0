import { spawn, type ChildProcess } from "node:child_process";
import { readdirSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Stepwise, Worker } from "@stepwise/sdk";
import { CLI, eventually, killProcess, ROOT, runOfEventIn, Stack } from "./support/stack.js";

// What the dashboard reads, as curl reads it: Connect JSON over HTTP/1.1
// (fetch with a JSON body) to RunService on the real stack. And ingest
// serving the dashboard at /, unless STEPWISE_DASHBOARD=false.

describe("the dashboard's RPCs over Connect JSON", () => {
  const stack = new Stack();
  let client: Stepwise;
  let worker: Worker;

  /** POST /stepwise.v1.RunService/<method> with a JSON body, as curl -d does. */
  async function call(method: string, body: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
    const res = await fetch(`${stack.ingestUrl}/stepwise.v1.RunService/${method}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    return { status: res.status, json: (await res.json()) as Record<string, unknown> };
  }

  beforeAll(async () => {
    await stack.start();
    client = new Stepwise({ appId: "rpc", url: stack.ingestUrl });
    const child = client.createFunction({ id: "child", triggers: [{ event: "child.never" }] }, async ({ event }) => ({ got: event.data["n"] }));
    const greet = client.createFunction({ id: "greet", triggers: [{ event: "greet" }] }, async ({ event, step }) => {
      const hello = await step.run("hello", () => `hello ${String(event.data["name"])}`);
      const sub = await step.invoke("sub", { function: child, data: { n: 7 } });
      if (event.data["wait"] === true) await step.waitForEvent("ack", { event: "greet.ack", timeout: "1h", match: "data.name" });
      return { hello, sub };
    });
    worker = new Worker({ url: stack.executorUrl, functions: [greet, child], capacity: 3, handleSignals: false });
    await worker.connect();
  });

  afterAll(async () => {
    await worker?.close();
    client?.close();
    await stack.stop();
  });

  it("ListWorkers: the connected worker, its functions, capacity and slots; gone once it disconnects", async () => {
    const { status, json } = await call("ListWorkers", {});
    expect(status).toBe(200);
    const workers = json["workers"] as Array<Record<string, unknown>>;
    expect(workers).toHaveLength(1);
    expect(workers[0]).toMatchObject({ appId: "rpc", functionIds: ["greet", "child"], capacity: 3, sdk: expect.stringContaining("@stepwise/sdk") });
    expect(String(workers[0]!["workerId"])).toMatch(/^rpc-/);
    expect(workers[0]!["executorId"]).toEqual(expect.any(String));
    expect(workers[0]!["connectedAt"]).toEqual(expect.any(String));
    expect((await call("ListWorkers", { appId: "other" })).json["workers"] ?? []).toEqual([]);
    expect((await call("ListWorkers", { appId: "not an id!" })).status).toBe(400);

    // Another app's worker: listed while connected, gone once it closes its stream.
    const other = new Stepwise({ appId: "rpc2", url: stack.ingestUrl });
    const fn = other.createFunction({ id: "solo", triggers: [{ event: "solo" }] }, async () => "ok");
    const second = new Worker({ url: stack.executorUrl, functions: [fn], capacity: 1, handleSignals: false });
    await second.connect();
    const listed = async () => ((await call("ListWorkers", { appId: "rpc2" })).json["workers"] ?? []) as Array<Record<string, unknown>>;
    expect(await listed()).toEqual([expect.objectContaining({ appId: "rpc2", functionIds: ["solo"], capacity: 1 })]);
    await second.close();
    other.close();
    await eventually(async () => ((await listed()).length === 0 ? true : undefined), 10_000, "the closed worker to leave the list");
    expect(((await call("ListWorkers", {})).json["workers"] as unknown[]).length).toBe(1);
  });

  it("ListEvents: events newest first with their runs, by name, paged; GetRun: kinds, awaits and the invoked-by link", async () => {
    const [first] = await client.send({ name: "greet", data: { name: "ada" } });
    await runOfEventIn(client, first!, "COMPLETED");
    const [second] = await client.send({ name: "greet", data: { name: "bob", wait: true } });
    const waiting = await runOfEventIn(client, second!, "WAITING");
    // WAITING first for the invoked run, then for the event.
    const got = await eventually(async () => {
      const run = (await call("GetRun", { runId: waiting.id })).json["run"] as {
        status: string;
        steps: Array<{ key: string; kind: string; invokedRunId?: string }>;
        awaits?: Array<Record<string, unknown>>;
      };
      return run.status === "RUN_STATUS_WAITING" && run.awaits?.[0]?.["stepKey"] === "ack:0" ? run : undefined;
    }, 20_000, "the run to wait for greet.ack");

    const page1 = await call("ListEvents", { name: "greet", pageSize: 1 });
    expect(page1.status).toBe(200);
    const events1 = page1.json["events"] as Array<{ event: { id: string; name: string; data: unknown }; receivedAt: string; runs: Array<Record<string, unknown>> }>;
    expect(events1.map((e) => e.event.id)).toEqual([second]);
    expect(events1[0]!.event).toMatchObject({ name: "greet", data: { name: "bob", wait: true } });
    expect(events1[0]!.runs).toHaveLength(1);
    expect(events1[0]!.runs[0]).toMatchObject({ id: waiting.id, functionId: "greet", status: "RUN_STATUS_WAITING" });
    expect(events1[0]!.runs[0]!["event"]).toBeUndefined();
    const page2 = await call("ListEvents", { name: "greet", pageSize: 1, pageToken: page1.json["nextPageToken"] });
    const events2 = page2.json["events"] as typeof events1;
    expect(events2.map((e) => e.event.id)).toEqual([first]);
    expect(events2[0]!.runs[0]).toMatchObject({ status: "RUN_STATUS_COMPLETED" });
    expect(page2.json["nextPageToken"] ?? "").toBe("");
    // Unfiltered: the invoked children's events are events too.
    const all = (await call("ListEvents", {})).json["events"] as typeof events1;
    expect(all.map((e) => e.event.name)).toEqual(expect.arrayContaining(["greet", "stepwise/function.invoked"]));

    expect(got.steps.map((s) => [s.key, s.kind])).toEqual([
      ["hello:0", "STEP_KIND_RUN"],
      ["sub:0", "STEP_KIND_INVOKE"],
    ]);
    const childId = got.steps[1]!.invokedRunId!;
    expect(childId).toMatch(/^[0-9a-f-]{36}$/);
    expect(got.awaits).toEqual([
      expect.objectContaining({ stepKey: "ack:0", stepId: "ack", kind: "AWAIT_KIND_WAIT_FOR_EVENT", eventName: "greet.ack", dueAt: expect.any(String), since: expect.any(String) }),
    ]);
    const child = (await call("GetRun", { runId: childId })).json["run"] as Record<string, unknown>;
    expect(child).toMatchObject({ functionId: "child", invokedByRunId: waiting.id, invokedByStepKey: "sub:0", output: { got: 7 } });

    for (const bad of [{ pageSize: 1001 }, { pageToken: "junk" }, { name: "x".repeat(257) }]) {
      const res = await call("ListEvents", bad);
      expect(res.status, JSON.stringify(bad).slice(0, 40)).toBe(400);
      expect(res.json["code"]).toBe("invalid_argument");
    }
  });

  it("ListFunctions with countsSince: the runs of the span by status; ListRuns by creation time", async () => {
    const hourAgo = new Date(Date.now() - 3_600_000).toISOString();
    const { json } = await call("ListFunctions", { countsSince: hourAgo });
    const functions = json["functions"] as Array<{ functionId: string; config: Record<string, unknown>; runCounts?: Array<{ status: string; count: number }> }>;
    const greet = functions.find((f) => f.functionId === "greet")!;
    expect(greet.config).toMatchObject({ triggers: [{ event: "greet" }] });
    expect(greet.runCounts).toEqual([
      { status: "RUN_STATUS_WAITING", count: 1 },
      { status: "RUN_STATUS_COMPLETED", count: 1 },
    ]);
    expect(functions.find((f) => f.functionId === "child")!.runCounts).toEqual([{ status: "RUN_STATUS_COMPLETED", count: 2 }]);
    // Without countsSince, no counts.
    const plain = (await call("ListFunctions", {})).json["functions"] as typeof functions;
    expect(plain.every((f) => (f.runCounts ?? []).length === 0)).toBe(true);
    expect((await call("ListFunctions", { countsSince: "yesterday" })).status).toBe(400);

    const future = new Date(Date.now() + 60_000).toISOString();
    expect((await call("ListRuns", { createdAfter: future })).json["runs"] ?? []).toEqual([]);
    const before = (await call("ListRuns", { functionId: "greet", createdBefore: future, createdAfter: hourAgo })).json["runs"] as unknown[];
    expect(before).toHaveLength(2);
  });

  it("GET / and the client routes answer the dashboard's index.html, its assets the built files", async () => {
    for (const path of ["/", "/runs", "/runs/whatever", "/events", "/workers", "/functions"]) {
      const res = await fetch(`${stack.ingestUrl}${path}`);
      expect(res.status, path).toBe(200);
      expect(res.headers.get("content-type")).toBe("text/html; charset=utf-8");
      expect(await res.text()).toContain('<div id="app"></div>');
    }
    const asset = readdirSync(`${ROOT}services/dashboard/dist/assets`).find((f) => f.endsWith(".js"))!;
    const js = await fetch(`${stack.ingestUrl}/assets/${asset}`);
    expect(js.status).toBe(200);
    expect(js.headers.get("content-type")).toBe("text/javascript; charset=utf-8");
    expect(js.headers.get("cache-control")).toContain("immutable");
    expect((await fetch(`${stack.ingestUrl}/nothing-here`)).status).toBe(404);
  });
});

describe("STEPWISE_DASHBOARD=false", () => {
  const stack = new Stack({ STEPWISE_DASHBOARD: "false" });

  beforeAll(async () => {
    await stack.start();
  });

  afterAll(async () => {
    await stack.stop();
  });

  it("serves no dashboard: 404 at / and its routes, the RPCs as before", async () => {
    for (const path of ["/", "/runs", "/index.html"]) expect((await fetch(`${stack.ingestUrl}${path}`)).status, path).toBe(404);
    const res = await fetch(`${stack.ingestUrl}/stepwise.v1.RunService/ListWorkers`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
    expect(res.status).toBe(200);
  });
});

describe("stepwise dev", () => {
  const procs: ChildProcess[] = [];

  /** `stepwise dev --memory` on a free port, as a user starts it; resolves with its URL. */
  function dev(env: Record<string, string> = {}): Promise<string> {
    const proc = spawn(process.execPath, [CLI, "dev", "--memory", "--port", "0"], {
      env: { ...process.env, LOG_LEVEL: "warn", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    procs.push(proc);
    return new Promise((resolve, reject) => {
      let out = "";
      const timer = setTimeout(() => reject(new Error(`stepwise dev did not start: ${out}`)), 30_000);
      const onData = (d: Buffer) => {
        out += d.toString();
        const m = /listening on (http:\/\/\S+)/.exec(out);
        if (m) {
          clearTimeout(timer);
          resolve(m[1]!);
        }
      };
      proc.stdout.on("data", onData);
      proc.stderr.on("data", onData);
      proc.once("exit", (code) => reject(new Error(`stepwise dev exited ${code}: ${out}`)));
    });
  }

  afterAll(async () => {
    await Promise.all(procs.map((p) => killProcess(p, "SIGKILL")));
  });

  it("serves the dashboard and its RPCs on its one port, unless STEPWISE_DASHBOARD=false", async () => {
    const [on, off] = await Promise.all([dev(), dev({ STEPWISE_DASHBOARD: "false" })]);
    const page = await fetch(`${on}/runs`);
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('<div id="app"></div>');
    const workers = await fetch(`${on}/stepwise.v1.RunService/ListWorkers`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
    expect(workers.status).toBe(200);
    expect((await fetch(`${off}/`)).status).toBe(404);
  });
});
