// Runs W1–W3 against DBOS Transact: starts the DBOS app (dbos-app.ts) on
// the machine's Postgres, in a schema of its own in the same database the
// Stepwise benchmark uses (dropped afterwards), and drives it as its client.
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { freePort } from "../../dist/engine-deployment.js";
import { ManagedProcess } from "../../dist/managed-process.js";
import { HttpJsonClient } from "./http-json-client.js";
import { driverOptions, installedVersion, runPeerWorkloads, writePeerResults, type PeerResults } from "./peer-runner.js";

const APP_SCRIPT = fileURLToPath(new URL("./dbos-app.js", import.meta.url));
const databaseUrl = process.env["BENCH_DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/test";

const options = driverOptions();
const version = installedVersion("@dbos-inc/dbos-sdk");
const schema = `bench_dbos_${randomBytes(5).toString("hex")}`;
const dir = mkdtempSync(join(tmpdir(), "bench-dbos-"));
const results: PeerResults = {
  peer: "dbos",
  version,
  setup:
    `@dbos-inc/dbos-sdk ${version} in an app process serving the workflows over HTTP/1.1, its system database in schema ` +
    "bench_dbos_<random> of the same Postgres; the client calling the app and waiting for each result",
  workloads: {},
  ok: false,
};
let app: ManagedProcess | undefined;
let client: HttpJsonClient | undefined;

try {
  const port = await freePort();
  app = ManagedProcess.node("dbos-app", [APP_SCRIPT], {
    env: { ...process.env, DBOS_SYSTEM_DATABASE_URL: databaseUrl, BENCH_DBOS_SCHEMA: schema, PORT: String(port) },
    logDir: dir,
  });
  await app.waitForOutput("listening", 60_000);
  client = new HttpJsonClient(`http://127.0.0.1:${port}`, options.inflight);
  const http = client;
  results.workloads = await runPeerWorkloads(
    (fn, input) => http.post(`/${fn}`, input),
    options,
    new Map([
      ["dbos-app", app.pid],
      ["client", process.pid],
    ]),
  );
  results.ok = Object.values(results.workloads).every((w) => w.ok);
} catch (err) {
  results.error = err instanceof Error ? err.message : String(err);
  if (app) process.stderr.write(`--- dbos-app\n${app.tail().slice(-2000)}\n`);
} finally {
  client?.close();
  await app?.stop(10_000);
  const db = new pg.Client({ connectionString: databaseUrl });
  await db.connect();
  await db.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  await db.end();
  rmSync(dir, { recursive: true, force: true });
}
writePeerResults(options, results);
process.exitCode = results.ok ? 0 : 1;
