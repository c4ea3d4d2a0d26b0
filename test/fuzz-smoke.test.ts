// The fuzz, at smoke size: generated and mutated inputs to every RPC in the
// four protocols, against `stepwise dev` through `npm run fuzz`'s own command
// and against the services as processes on the real Postgres and NATS. Every
// answer must be one a client's input may get (no INTERNAL, no 5xx, no
// silence), no error may echo long input or show SQL, stacks or paths, the
// services must still serve, and no event may be stored that no accepted
// Send sent. The seeds are fixed so that a failure here is sent again by
// `npm run fuzz -- --seed N --inputs M`.
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checkReport } from "../bench/src/fuzz/fuzz-report.js";
import { runFuzz, SERVICES } from "../bench/src/fuzz/fuzz-run.js";
import { Stack } from "./support/stack.js";

const MAIN = fileURLToPath(new URL("../bench/dist/fuzz/main.js", import.meta.url));
const methods = SERVICES.flatMap((s) => s.methods.map((m) => `${s.name}.${m.name}`));

describe("fuzz (smoke size)", () => {
  const dir = mkdtempSync(join(tmpdir(), "fuzz-smoke-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("npm run fuzz against stepwise dev: 2,000 inputs, every method and protocol, exits 0", async () => {
    const out = join(dir, "dev.json");
    const run = await promisify(execFile)(process.execPath, [MAIN, "--inputs", "2000", "--seed", "1", "--concurrency", "4", "--out", out], { timeout: 240_000 }).catch(
      (err: { code?: number; stdout?: string; stderr?: string }) => err,
    );
    const report = JSON.parse(readFileSync(out, "utf8")) as { inputs: number; byMethod: Record<string, number>; byProtocol: Record<string, number>; problems: string[] };
    expect(report.problems, run.stdout).toEqual([]);
    expect("code" in run ? run.code : 0).toBe(0);
    expect(report.inputs).toBe(2000);
    expect(Object.keys(report.byMethod).sort()).toEqual([...methods].sort());
    expect(Object.keys(report.byProtocol).sort()).toEqual(["connect-json", "connect-proto", "grpc", "grpc-web"]);
  }, 300_000);

  describe("against the services as processes", () => {
    const stack = new Stack();
    beforeAll(async () => {
      await stack.start();
    });
    afterAll(async () => {
      await stack.stop();
    });

    it("2,000 inputs to ingest and executor: every answer one a client may get, nothing stored from a rejected input", async () => {
      // Four at a time: the smoke shares two cores with other suites (the chaos smoke's recovery bounds among them).
      const report = await runFuzz({ url: stack.ingestUrl, workerUrl: stack.executorUrl, inputs: 2000, seed: 2, concurrency: 4 });
      expect(checkReport(report), JSON.stringify(report.failures.slice(0, 5), null, 2)).toEqual([]);
      expect(report.inputs).toBe(2000);
      expect(Object.keys(report.byMethod).sort()).toEqual([...methods].sort());
      // Not all refused: some generated inputs are valid, and are served.
      expect(report.byCode["ok"]).toBeGreaterThan(100);
      expect(report.byCode["invalid_argument"]).toBeGreaterThan(700);
    }, 300_000);
  });

  describe("against the services with keys on", () => {
    const stack = new Stack({ STEPWISE_INSECURE: "false" });
    const keys = { admin: "", worker: "" };
    beforeAll(async () => {
      await stack.start();
      for (const [name, args] of [["admin", ["--scope", "admin"]], ["worker", ["--scope", "worker", "--app", "fuzz"]]] as const) {
        const made = await stack.stepwise(["keys", "create", ...args, "--json"]);
        expect(made.code, made.stderr).toBe(0);
        keys[name] = (JSON.parse(made.stdout) as { secret: string }).secret;
      }
    });
    afterAll(async () => {
      await stack.stop();
    });

    it("1,000 inputs, some with hostile Authorization headers: refused UNAUTHENTICATED or PERMISSION_DENIED, nothing stored", async () => {
      const report = await runFuzz({ url: stack.ingestUrl, workerUrl: stack.executorUrl, inputs: 1000, seed: 3, concurrency: 4, keys });
      console.log(`answers with keys on: ${JSON.stringify(report.byCode)}; inputs by kind: ${JSON.stringify(report.byKind)}`);
      expect(checkReport(report), JSON.stringify(report.failures.slice(0, 5), null, 2)).toEqual([]);
      expect(report.byKind["auth"]).toBeGreaterThan(50);
      expect(report.byCode["unauthenticated"]).toBeGreaterThan(20);
      expect(report.byCode["permission_denied"]).toBeGreaterThan(5);
      // The keyed inputs are served as without keys.
      expect(report.byCode["ok"]).toBeGreaterThan(50);
    }, 300_000);
  });
});
