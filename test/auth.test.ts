import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { EventSchema, IngestService, RunService } from "@stepwise/proto";
import { Stepwise, StepwiseError, Worker } from "@stepwise/sdk";
import pg from "pg";
import { chromium } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Stack } from "./support/stack.js";

type Scope = "event" | "worker" | "read" | "admin";

/** The four protocols a client may speak to ingest. */
const PROTOCOLS: Record<string, (baseUrl: string, interceptors: Interceptor[]) => Transport> = {
  "Connect JSON": (baseUrl, interceptors) => createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: false, interceptors }),
  "Connect binary": (baseUrl, interceptors) => createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: true, interceptors }),
  gRPC: (baseUrl, interceptors) => createGrpcTransport({ baseUrl, interceptors }),
  "gRPC-Web": (baseUrl, interceptors) => createGrpcWebTransport({ baseUrl, httpVersion: "1.1", interceptors }),
};

const bearer = (key: string): Interceptor => (next) => (req) => {
  req.header.set("authorization", `Bearer ${key}`);
  return next(req);
};

/** The code a call ended with; "ok" when it succeeded. */
async function outcome(call: () => Promise<unknown>): Promise<string> {
  try {
    await call();
    return "ok";
  } catch (err) {
    return Code[ConnectError.from(err).code];
  }
}

// API keys and environments on the real stack, started without
// STEPWISE_INSECURE: every call needs a key, the key decides the
// environment it acts in, and its scope what it may call.
describe("API keys and environments", () => {
  const stack = new Stack({ STEPWISE_INSECURE: "false" });
  const keys: Record<string, { id: string; secret: string; environment: string }> = {};
  const workers: Worker[] = [];
  const clients: Stepwise[] = [];
  let db: pg.Client;

  async function createKey(name: string, scope: Scope, env: string, app?: string): Promise<void> {
    const args = ["keys", "create", "--scope", scope, "--env", env, "--name", name, "--json", ...(app ? ["--app", app] : [])];
    const res = await stack.stepwise(args);
    expect(res.code, res.stderr).toBe(0);
    const made = JSON.parse(res.stdout) as { id: string; secret: string; environment: string; scope: string };
    expect(made).toMatchObject({ environment: env, scope });
    expect(made.secret).toMatch(/^sw_[A-Za-z0-9_-]{43}$/);
    keys[name] = { id: made.id, secret: made.secret, environment: env };
  }

  /** RunService over gRPC with a key: for what the SDK does not wrap (ListFunctions). */
  const runsAs = (key: string) => createClient(RunService, createGrpcTransport({ baseUrl: stack.ingestUrl, interceptors: [bearer(keys[key]!.secret)] }));

  const client = (key: string) => {
    const c = new Stepwise({ appId: "shop", url: stack.ingestUrl, apiKey: keys[key]!.secret });
    clients.push(c);
    return c;
  };

  /** A worker of app `app` with one function that answers which environment it serves. */
  const startWorker = async (key: string, app: string, answer: string) => {
    const c = new Stepwise({ appId: app, url: stack.ingestUrl });
    clients.push(c);
    const fn = c.createFunction({ id: "place", triggers: [{ event: "order.placed" }] }, () => answer);
    const w = new Worker({ url: stack.executorUrl, functions: [fn], handleSignals: false, apiKey: keys[key]!.secret });
    workers.push(w);
    await w.connect();
    return w;
  };

  beforeAll(async () => {
    await stack.start();
    for (const [name, scope, env, app] of [
      ["prod-event", "event", "production"],
      ["prod-read", "read", "production"],
      ["prod-admin", "admin", "production"],
      ["prod-shop", "worker", "production", "shop"],
      ["staging-event", "event", "staging"],
      ["staging-read", "read", "staging"],
      ["staging-shop", "worker", "staging", "shop"],
      ["default-admin", "admin", "default"],
    ] as const) {
      await createKey(name, scope, env, app);
    }
    await startWorker("prod-shop", "shop", "production");
    await startWorker("staging-shop", "shop", "staging");
    db = new pg.Client({ connectionString: stack.databaseUrl });
    await db.connect();
  });

  afterAll(async () => {
    await Promise.all(workers.map((w) => w.close()));
    for (const c of clients) c.close();
    await db?.end();
    await stack.stop();
  });

  for (const [protocol, transport] of Object.entries(PROTOCOLS)) {
    it(`${protocol}: each RunService and IngestService call is allowed to its scopes only`, async () => {
      const as = (key: string | undefined) => {
        const t = transport(stack.ingestUrl, key === undefined ? [] : [bearer(key)]);
        return { ingest: createClient(IngestService, t), runs: createClient(RunService, t) };
      };
      const runId = randomUUID();
      const calls: Record<string, { allowed: Scope[]; call: (c: ReturnType<typeof as>) => Promise<unknown> }> = {
        Send: { allowed: ["event", "admin"], call: (c) => c.ingest.send({ events: [create(EventSchema, { name: "auth.probe", data: {} })] }) },
        ListRuns: { allowed: ["read", "admin"], call: (c) => c.runs.listRuns({ pageSize: 1 }) },
        ListFunctions: { allowed: ["read", "admin"], call: (c) => c.runs.listFunctions({}) },
        // An unknown run: NOT_FOUND once a key may ask.
        GetRun: { allowed: ["read", "admin"], call: (c) => c.runs.getRun({ runId }) },
        CancelRun: { allowed: ["admin"], call: (c) => c.runs.cancelRun({ runId }) },
        RerunRun: { allowed: ["admin"], call: (c) => c.runs.rerunRun({ runId }) },
      };
      const seen: Record<string, string> = {};
      const expected: Record<string, string> = {};
      const allowedAnswer: Record<string, string> = { Send: "ok", ListRuns: "ok", ListFunctions: "ok", GetRun: "NotFound", CancelRun: "NotFound", RerunRun: "NotFound" };
      const callers: [string, string | undefined, Scope | undefined][] = [
        ["no key", undefined, undefined],
        ["an unknown key", "sw_" + "x".repeat(43), undefined],
        ["a malformed header", "not a key at all", undefined],
        ["event", keys["prod-event"]!.secret, "event"],
        ["worker", keys["prod-shop"]!.secret, "worker"],
        ["read", keys["prod-read"]!.secret, "read"],
        ["admin", keys["prod-admin"]!.secret, "admin"],
      ];
      for (const [who, key, scope] of callers) {
        for (const [name, { allowed, call }] of Object.entries(calls)) {
          const label = `${name} with ${who}`;
          seen[label] = await outcome(() => call(as(key)));
          expected[label] = scope === undefined ? "Unauthenticated" : allowed.includes(scope) ? allowedAnswer[name]! : "PermissionDenied";
        }
      }
      expect(seen).toEqual(expected);
    });
  }

  it("a refused call stores nothing and says nothing of what it asked about", async () => {
    const id = `refused-${randomUUID()}`;
    const send = (key: string) => client(key).send({ id, name: "order.placed", data: { n: 1 } });
    for (const key of ["prod-read", "prod-shop"]) {
      const err = await send(key).then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(StepwiseError);
      expect((err as StepwiseError).code).toBe("permission_denied");
      expect((err as StepwiseError).message).not.toContain(id);
    }
    const schemas = await db.query<{ name: string }>("SELECT nspname AS name FROM pg_namespace WHERE nspname = $1 OR starts_with(nspname, $2)", [stack.schema, `${stack.schema}_env_`]);
    expect(schemas.rows.length).toBeGreaterThanOrEqual(1);
    for (const { name } of schemas.rows) {
      const found = await db.query(`SELECT 1 FROM "${name}".events WHERE id = $1`, [id]).catch(() => ({ rows: [] }));
      expect(found.rows, `events of ${name}`).toEqual([]);
    }
    // A run of another environment and one that does not exist get the same answer.
    const other = await client("default-admin").getRun(randomUUID()).then(() => "found", (e: StepwiseError) => e.code);
    expect(other).toBe("not_found");
  });

  it("environments do not cross: a staging event starts a staging run only, which production keys cannot see", async () => {
    const [stagingEvent] = await client("staging-event").send({ name: "order.placed", data: { n: 2 } });
    const [prodEvent] = await client("prod-event").send({ name: "order.placed", data: { n: 3 } });
    const staging = await client("staging-read").waitForRuns(stagingEvent!, { timeoutMs: 20_000 });
    const production = await client("prod-read").waitForRuns(prodEvent!, { timeoutMs: 20_000 });
    expect(staging).toMatchObject({ done: true, runs: [{ status: "COMPLETED", output: "staging" }] });
    expect(production).toMatchObject({ done: true, runs: [{ status: "COMPLETED", output: "production" }] });
    // Each side sees nothing of the other.
    expect(await client("prod-read").listRunsOfEvent(stagingEvent!)).toEqual([]);
    expect(await client("staging-read").listRunsOfEvent(prodEvent!)).toEqual([]);
    const cross = await client("prod-read").getRun(staging.runs[0]!.id).then(() => "found", (e: StepwiseError) => e.code);
    expect(cross).toBe("not_found");
    const cancel = await client("prod-admin").cancelRun(staging.runs[0]!.id).then(() => "cancelled", (e: StepwiseError) => e.code);
    expect(cancel).toBe("not_found");
    // The default environment has neither.
    expect(await client("default-admin").listRunsOfEvent(stagingEvent!)).toEqual([]);
    expect(await client("default-admin").listRunsOfEvent(prodEvent!)).toEqual([]);
  });

  it("a worker key of app shop cannot register app billing, so it never receives billing's runs", async () => {
    const c = new Stepwise({ appId: "billing", url: stack.ingestUrl });
    clients.push(c);
    const fn = c.createFunction({ id: "charge", triggers: [{ event: "invoice.due" }] }, () => "charged");
    const w = new Worker({ url: stack.executorUrl, functions: [fn], handleSignals: false, apiKey: keys["prod-shop"]!.secret });
    workers.push(w);
    const err = await w.connect().then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(StepwiseError);
    expect(err).toMatchObject({ code: "permission_denied", message: expect.stringContaining("billing") as unknown });
    // Nothing was registered: production has no billing function.
    const { functions } = await runsAs("prod-read").listFunctions({});
    expect(functions.map((f) => `${f.appId}/${f.functionId}`)).not.toContain("billing/charge");
    // An event key is not a worker key either.
    const w2 = new Worker({ url: stack.executorUrl, functions: [fn], handleSignals: false, apiKey: keys["prod-event"]!.secret });
    workers.push(w2);
    await expect(w2.connect()).rejects.toMatchObject({ code: "permission_denied" });
    const w3 = new Worker({ url: stack.executorUrl, functions: [fn], handleSignals: false });
    workers.push(w3);
    await expect(w3.connect()).rejects.toMatchObject({ code: "unauthenticated" });
  });

  it("an event key limited to an app starts only that app's functions", async () => {
    await createKey("prod-reports", "worker", "production", "reports");
    await createKey("prod-audit", "worker", "production", "audit");
    await createKey("prod-reports-events", "event", "production", "reports");
    for (const [key, app] of [["prod-reports", "reports"], ["prod-audit", "audit"]] as const) {
      const c = new Stepwise({ appId: app, url: stack.ingestUrl });
      clients.push(c);
      const fn = c.createFunction({ id: "close", triggers: [{ event: "ledger.closed" }] }, () => app);
      const w = new Worker({ url: stack.executorUrl, functions: [fn], handleSignals: false, apiKey: keys[key]!.secret });
      workers.push(w);
      await w.connect();
    }
    const [limited] = await client("prod-reports-events").send({ name: "ledger.closed", data: { n: 1 } });
    const [open] = await client("prod-event").send({ name: "ledger.closed", data: { n: 2 } });
    const one = await client("prod-read").waitForRuns(limited!, { timeoutMs: 20_000 });
    const both = await client("prod-read").waitForRuns(open!, { timeoutMs: 20_000 });
    expect(one).toMatchObject({ done: true, runs: [{ appId: "reports", status: "COMPLETED", output: "reports" }] });
    expect(both.done).toBe(true);
    expect(both.runs.map((r) => `${r.appId}:${r.status}`).sort()).toEqual(["audit:COMPLETED", "reports:COMPLETED"]);
  });

  it("the CLI works with a key, and is refused without one", async () => {
    const refused = await stack.stepwise(["runs", "list"]);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/unauthenticated|API key/i);
    const [eventId] = await client("prod-event").send({ name: "order.placed", data: { n: 4 } });
    await client("prod-read").waitForRuns(eventId!, { timeoutMs: 20_000 });
    const listed = await stack.stepwise(["runs", "list", "--json"], { STEPWISE_API_KEY: keys["prod-read"]!.secret });
    expect(listed.code, listed.stderr).toBe(0);
    const runs = JSON.parse(listed.stdout) as { runs?: { event?: { id: string } }[] } | { event?: { id: string } }[];
    expect(JSON.stringify(runs)).toContain(eventId!);
    const keysListed = await stack.stepwise(["keys", "list", "--env", "production", "--json"]);
    const list = JSON.parse(keysListed.stdout) as { id: string; scope: string }[];
    const production = Object.values(keys).filter((k) => k.environment === "production");
    expect(production.length).toBeGreaterThanOrEqual(4);
    expect(list.map((k) => k.id).sort()).toEqual(production.map((k) => k.id).sort());
    expect(keysListed.stdout).not.toContain(keys["prod-read"]!.secret);
  });

  it("a revoked key is refused by ingest and the executor within the bound", async () => {
    await createKey("to-revoke", "read", "staging");
    await createKey("worker-to-revoke", "worker", "staging", "shop");
    const reader = runsAs("to-revoke");
    await reader.listFunctions({});
    const revoked = await stack.stepwise(["keys", "revoke", keys["to-revoke"]!.id]);
    expect(revoked.code, revoked.stderr).toBe(0);
    // Once the CLI exited: the row changed a little before.
    let revokedAt = Date.now();
    let refusedAfter: number | undefined;
    while (Date.now() - revokedAt < 10_000) {
      const code = await outcome(() => reader.listFunctions({}));
      if (code === "Unauthenticated") {
        refusedAfter = Date.now() - revokedAt;
        break;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    console.log(`a revoked key was refused ${refusedAfter} ms after the revocation`);
    // KEY_REFRESH_MS (2 s), plus the reload's queries.
    expect(refusedAfter).toBeDefined();
    expect(refusedAfter!).toBeLessThan(3_000);
    // The executor as well.
    const workerRevoked = await stack.stepwise(["keys", "revoke", keys["worker-to-revoke"]!.id]);
    expect(workerRevoked.code, workerRevoked.stderr).toBe(0);
    revokedAt = Date.now();
    await new Promise((r) => setTimeout(r, Math.max(0, 2_500 - (Date.now() - revokedAt))));
    const c = new Stepwise({ appId: "shop", url: stack.ingestUrl });
    clients.push(c);
    const fn = c.createFunction({ id: "late", triggers: [{ event: "late.thing" }] }, () => 1);
    const w = new Worker({ url: stack.executorUrl, functions: [fn], handleSignals: false, apiKey: keys["worker-to-revoke"]!.secret });
    workers.push(w);
    await expect(w.connect()).rejects.toMatchObject({ code: "unauthenticated" });
    // Revoking again says there is nothing to revoke.
    const again = await stack.stepwise(["keys", "revoke", keys["to-revoke"]!.id]);
    expect(again.code).toBe(1);
  });

  it("a worker connected with a key that is then revoked loses its stream, and with it the app's runs", async () => {
    await createKey("late-worker", "worker", "staging", "late");
    const c = new Stepwise({ appId: "late", url: stack.ingestUrl });
    clients.push(c);
    let ran = 0;
    const fn = c.createFunction({ id: "tick", triggers: [{ event: "late.tick" }] }, () => ++ran);
    const errors: string[] = [];
    const w = new Worker({
      url: stack.executorUrl,
      functions: [fn],
      handleSignals: false,
      apiKey: keys["late-worker"]!.secret,
      onError: (e) => errors.push(`${(e as StepwiseError).code}: ${e.message}`),
    });
    workers.push(w);
    await w.connect();
    const [before] = await client("staging-event").send({ name: "late.tick", data: {} });
    expect(await client("staging-read").waitForRuns(before!, { timeoutMs: 20_000 })).toMatchObject({ done: true, runs: [{ status: "COMPLETED" }] });
    const lateWorkers = async () => (await runsAs("staging-read").listWorkers({})).workers.filter((x) => x.appId === "late").length;
    expect(await lateWorkers()).toBe(1);

    const revoked = await stack.stepwise(["keys", "revoke", keys["late-worker"]!.id]);
    expect(revoked.code, revoked.stderr).toBe(0);
    const revokedAt = Date.now();
    while ((await lateWorkers()) > 0 && Date.now() - revokedAt < 15_000) await new Promise((r) => setTimeout(r, 100));
    const goneAfter = Date.now() - revokedAt;
    console.log(`a worker whose key was revoked was cut off ${goneAfter} ms after the revocation`);
    expect(await lateWorkers()).toBe(0);
    // Revocation (2 s) plus, at most, the executor's next message on the stream (a heartbeat each second here).
    expect(goneAfter).toBeLessThan(6_000);
    expect(errors.join("\n")).toMatch(/unauthenticated: .*revoked/);
    // Its app's runs now wait for a worker with a valid key.
    const ranBefore = ran;
    const [after] = await client("staging-event").send({ name: "late.tick", data: {} });
    const waited = await client("staging-read").waitForRuns(after!, { timeoutMs: 1_500 });
    expect(waited.done).toBe(false);
    expect(ran).toBe(ranBefore);
  });

  it("the dashboard asks for a key, shows the key's environment with it, and asks again for a revoked one", async () => {
    const [eventId] = await client("staging-event").send({ name: "order.placed", data: { n: 5 } });
    const { runs } = await client("staging-read").waitForRuns(eventId!, { timeoutMs: 20_000 });
    const browser = await chromium.launch({
      executablePath: process.env["CHROMIUM_PATH"] ?? "/usr/bin/chromium",
      headless: true,
      args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"],
    });
    try {
      const page = await browser.newPage();
      await page.goto(`${stack.ingestUrl}/runs`);
      const prompt = page.locator(".key-prompt");
      await prompt.waitFor({ state: "visible", timeout: 15_000 });
      expect(await prompt.textContent()).toContain("This engine needs an API key");
      await createKey("dashboard", "read", "staging");
      await page.locator("input[name=api-key]").fill(keys["dashboard"]!.secret);
      await page.getByRole("button", { name: "Use this key" }).click();
      // Staging's run, with the key: none of production's.
      await page.locator(`tr[data-run="${runs[0]!.id}"]`).waitFor({ state: "visible", timeout: 15_000 });
      const shown = await page.locator("tr[data-run]").evaluateAll((rows) => rows.map((r) => r.getAttribute("data-run")));
      const production = await runsAs("prod-read").listRuns({ pageSize: 100 });
      for (const r of production.runs) expect(shown).not.toContain(r.id);
      const revoked = await stack.stepwise(["keys", "revoke", keys["dashboard"]!.id]);
      expect(revoked.code, revoked.stderr).toBe(0);
      await page.waitForTimeout(3_000);
      await page.reload();
      await prompt.waitFor({ state: "visible", timeout: 15_000 });
      expect(await prompt.textContent()).toContain("The API key was refused");
    } finally {
      await browser.close();
    }
  });

  it("keys create refuses what cannot be a key, with the reason", async () => {
    const cases: [string[], RegExp][] = [
      [["--scope", "worker"], /worker key is for one app/],
      [["--scope", "owner"], /scope "owner": one of event, worker, read, admin/],
      [["--scope", "read", "--env", "Prod"], /environment "Prod"/],
      [["--scope", "admin", "--app", "shop"], /an admin key covers every app of its environment/],
      [["--scope", "read", "--app", "shop"], /a read key covers every app of its environment/],
    ];
    for (const [args, message] of cases) {
      const res = await stack.stepwise(["keys", "create", ...args]);
      expect(res.code, args.join(" ")).toBe(2);
      expect(res.stderr).toMatch(message);
    }
  });
});
