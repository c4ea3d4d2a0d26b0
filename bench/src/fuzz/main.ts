// `npm run fuzz`: generated and mutated inputs to every RPC in every protocol
// against `stepwise dev` (started here, in memory) or an engine at --url.
// Prints what the engine answered, the failures with their inputs, and exits
// non-zero when any answer or the engine's state after the flood is wrong.
import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { freePort, killProcess, waitForOutput } from "../private-servers.js";
import { checkReport, formatReport } from "./fuzz-report.js";
import { runFuzz } from "./fuzz-run.js";

const USAGE = `Usage: npm run fuzz -- [--inputs 100000] [--seed N] [--url URL [--worker-url URL]] [--out report.json]
  --inputs   inputs to send (100,000 by default)
  --seed     the seed of the generators (a failure comes with it, to be sent again)
  --url      an engine already running (Ingest, Run and Worker services on one port, or
             the ingest's with --worker-url the executor's); by default
             \`stepwise dev --memory\` is started on a free port
  --concurrency  requests in flight at once (16)
  --admin-key, --worker-key  for an engine with keys: an admin key, and a worker key of app
             "fuzz" (stepwise keys create); some inputs then carry hostile Authorization headers
  --out      the report as JSON`;

const say = (line: string) => process.stderr.write(`[fuzz] ${line}\n`);

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      inputs: { type: "string", default: "100000" },
      seed: { type: "string" },
      url: { type: "string" },
      "worker-url": { type: "string" },
      concurrency: { type: "string", default: "16" },
      "admin-key": { type: "string" },
      "worker-key": { type: "string" },
      out: { type: "string" },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const inputs = Number(values.inputs);
  const seed = values.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(values.seed);
  if (!Number.isInteger(inputs) || inputs < 1 || !Number.isInteger(seed) || !(Number(values.concurrency) >= 1)) {
    process.stderr.write(`${USAGE}\n`);
    return 2;
  }
  let url = values.url;
  let stop = async () => {};
  if (!url) {
    const port = await freePort();
    const cli = fileURLToPath(new URL("../../../services/cli/dist/main.js", import.meta.url));
    const proc = spawn(process.execPath, [cli, "dev", "--memory", "--port", String(port)], {
      env: { ...process.env, LOG_LEVEL: "warn" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const log: string[] = [];
    await waitForOutput(proc, "stepwise dev listening", "stepwise dev", 60_000, log);
    url = `http://127.0.0.1:${port}`;
    stop = () => killProcess(proc, "SIGTERM");
    proc.once("exit", (code, signal) => code !== 0 && signal !== "SIGTERM" && say(`stepwise dev exited (${code ?? signal}):\n${log.join("").slice(-2000)}`));
  }
  say(`${inputs} inputs, seed ${seed}, against ${url}`);
  try {
    if ((values["admin-key"] === undefined) !== (values["worker-key"] === undefined)) {
      process.stderr.write("fuzz: --admin-key and --worker-key go together\n");
      return 2;
    }
    const keys = values["admin-key"] && values["worker-key"] ? { admin: values["admin-key"], worker: values["worker-key"] } : undefined;
    const report = await runFuzz({ url, workerUrl: values["worker-url"], inputs, seed, concurrency: Number(values.concurrency), log: say, keys });
    const problems = checkReport(report);
    process.stdout.write(formatReport(report, problems, seed));
    if (values.out) writeFileSync(values.out, JSON.stringify({ seed, ...report, problems }, null, 2));
    return problems.length === 0 ? 0 : 1;
  } finally {
    await stop();
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`fuzz: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
