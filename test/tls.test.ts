import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import * as https from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { Stepwise, StepwiseError, Worker } from "@stepwise/sdk";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLI, Stack } from "./support/stack.js";

const run = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), "stepwise-tls-"));
const CERT = join(dir, "cert.pem");
const KEY = join(dir, "key.pem");

/** A self-signed certificate for 127.0.0.1 and localhost, made by openssl for this test: its own CA. */
async function makeCertificate(): Promise<void> {
  await run("openssl", [
    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=stepwise-test",
    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", KEY, "-out", CERT,
  ]);
}

// Ingest and the executor serving TLS from certificate and key files; the
// SDK, a plain HTTP/1.1 client and the CLI trusting the test's own CA.
describe("TLS", () => {
  let stack: Stack;
  let ca: Buffer;

  beforeAll(async () => {
    await makeCertificate();
    ca = readFileSync(CERT);
    stack = new Stack({ STEPWISE_TLS_CERT_FILE: CERT, STEPWISE_TLS_KEY_FILE: KEY });
    await stack.start();
  });

  afterAll(async () => {
    await stack?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("runs a function end to end over https: the client sends, the worker's stream runs it", async () => {
    expect(stack.ingestUrl.startsWith("https://")).toBe(true);
    const client = new Stepwise({ appId: "tls", url: stack.ingestUrl, ca });
    const fn = client.createFunction({ id: "secure", triggers: [{ event: "tls.go" }] }, async ({ step, event }) =>
      step.run("double", () => (event.data["n"] as number) * 2),
    );
    const worker = new Worker({ url: stack.executorUrl, ca, functions: [fn], handleSignals: false });
    await worker.connect();
    try {
      const [id] = await client.send({ name: "tls.go", data: { n: 21 } });
      const { runs, done } = await client.waitForRuns(id!, { timeoutMs: 20_000 });
      expect(done).toBe(true);
      expect(runs[0]).toMatchObject({ status: "COMPLETED", output: 42 });
    } finally {
      await worker.close();
      client.close();
    }
  });

  it("serves Connect JSON over HTTP/1.1 with TLS, as curl would call it", async () => {
    const body = await new Promise<string>((resolve, reject) => {
      const req = https.request(`${stack.ingestUrl}/stepwise.v1.RunService/ListRuns`, { method: "POST", ca, headers: { "content-type": "application/json" } }, (res) => {
        let text = "";
        res.on("data", (d: Buffer) => (text += d.toString()));
        res.on("end", () => (res.statusCode === 200 ? resolve(text) : reject(new Error(`${res.statusCode} ${text}`))));
      });
      req.on("error", reject);
      req.end(JSON.stringify({ pageSize: 10 }));
    });
    expect(JSON.parse(body)).toHaveProperty("runs");
  });

  it("the CLI trusts the CA named by STEPWISE_CA_FILE", async () => {
    const { stdout } = await run(process.execPath, [CLI, "functions", "list", "--url", stack.ingestUrl], { env: { ...process.env, STEPWISE_CA_FILE: CERT } });
    expect(stdout).toContain("secure");
  });

  it("a client that does not trust the certificate is refused with UNAVAILABLE, and nothing is stored", async () => {
    const before = await stack.query<{ n: string }>("SELECT count(*) AS n FROM events");
    const client = new Stepwise({ appId: "tls", url: stack.ingestUrl });
    const err = await client.send({ name: "tls.untrusted", data: {} }).catch((e: unknown) => e);
    client.close();
    expect(err).toBeInstanceOf(StepwiseError);
    expect((err as StepwiseError).code).toBe("unavailable");
    expect((err as StepwiseError).message).toMatch(/certificate/i);
    const after = await stack.query<{ n: string }>("SELECT count(*) AS n FROM events");
    expect(after[0]!.n).toBe(before[0]!.n);
  });

  it("plain HTTP to a TLS port gets no answer, and the port keeps serving TLS", async () => {
    const plain = await fetch(`http://127.0.0.1:${stack.ingestPort}/healthz`).then(
      (r) => r.status,
      (e: unknown) => String(e),
    );
    expect(plain).not.toBe(200);
    const health = await new Promise<number>((resolve, reject) =>
      https.get(`${stack.ingestUrl}/healthz`, { ca }, (res) => resolve(res.statusCode ?? 0)).on("error", reject),
    );
    expect(health).toBe(200);
  });
});
