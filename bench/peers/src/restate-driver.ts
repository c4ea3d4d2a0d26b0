// Runs W1–W3 against Restate. Meant to run ONLY inside a loopback-only
// network namespace (`loopback-only node restate-driver.js ...`): the
// Restate server contacts the internet at every start, an update check no
// setting turns off. So everything Restate needs starts here, inside: the
// server (on a temporary data directory), the service, the registration of
// the service's deployment, and the client, which is this process.
import { mkdtempSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { arch, platform, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { ManagedProcess } from "../../dist/managed-process.js";
import { HttpJsonClient, waitForHttp } from "./http-json-client.js";
import { driverOptions, installedVersion, runPeerWorkloads, writePeerResults, type PeerResults } from "./peer-runner.js";

const INGRESS = "http://127.0.0.1:8080";
const ADMIN = "http://127.0.0.1:9070";
const SERVICE_PORT = 9080;
const SERVICE_SCRIPT = fileURLToPath(new URL("./restate-service.js", import.meta.url));

const options = driverOptions();
const require = createRequire(import.meta.url);
const version = installedVersion("@restatedev/restate-server");
const sdkVersion = installedVersion("@restatedev/restate-sdk");
const dir = mkdtempSync(join(tmpdir(), "bench-restate-"));
const procs: ManagedProcess[] = [];
const results: PeerResults = {
  peer: "restate",
  version,
  setup:
    `restate-server ${version} (single node, data in a temporary directory), the service on @restatedev/restate-sdk ${sdkVersion} ` +
    "over HTTP/2, the client calling the ingress over HTTP/1.1 and waiting for each result; all in a loopback-only network namespace",
  workloads: {},
  ok: false,
};
let client: HttpJsonClient | undefined;

try {
  const server = ManagedProcess.start(
    "restate-server",
    require.resolve(`@restatedev/restate-server-${platform()}-${arch()}/bin/restate-server`),
    ["--base-dir", join(dir, "data"), "--node-name", "bench", "--no-logo"],
    { env: { ...process.env, RESTATE_LOG_FILTER: "warn", RESTATE_DISABLE_TELEMETRY: "true" }, logDir: dir },
  );
  procs.push(server);
  await waitForHttp(`${ADMIN}/health`, 60_000);

  const service = ManagedProcess.node("restate-service", [SERVICE_SCRIPT], {
    env: { ...process.env, RESTATE_SERVICE_PORT: String(SERVICE_PORT) },
    logDir: dir,
  });
  procs.push(service);
  await service.waitForOutput("listening", 30_000);

  const admin = new HttpJsonClient(ADMIN, 1);
  await admin.post("/deployments", { uri: `http://127.0.0.1:${SERVICE_PORT}` });
  admin.close();

  client = new HttpJsonClient(INGRESS, options.inflight);
  const ingress = client;
  await waitForReady(() => ingress.post("/bench/oneStep", { run: -1 }));
  results.workloads = await runPeerWorkloads(
    (fn, input) => ingress.post(`/bench/${fn}`, input),
    options,
    new Map([
      ["restate-server", server.pid],
      ["restate-service", service.pid],
      ["client", process.pid],
    ]),
  );
  results.ok = Object.values(results.workloads).every((w) => w.ok);
} catch (err) {
  results.error = err instanceof Error ? err.message : String(err);
  for (const p of procs) process.stderr.write(`--- ${p.name}\n${p.tail().slice(-2000)}\n`);
} finally {
  client?.close();
  for (const p of procs.reverse()) await p.stop(10_000);
  rmSync(dir, { recursive: true, force: true });
}
writePeerResults(options, results);
process.exitCode = results.ok ? 0 : 1;

/** Retries a first call until the ingress knows the freshly registered service. */
async function waitForReady(call: () => Promise<unknown>): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      await call();
      return;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}
