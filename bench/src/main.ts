// `npm run bench`: deploys Stepwise as a user does (three service processes
// on the real Postgres and NATS, or `stepwise dev` alone with --embedded; a
// worker process, a client process), runs the workloads, checks every run,
// prints a table and writes JSON results.
// Exits non-zero when a run is lost or wrong, or the run fails.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EMBEDDED_WORKLOADS, parseBenchOptions, USAGE, WORKLOADS, type BenchOptions, type WorkloadName } from "./bench-options.js";
import { BenchSession } from "./bench-session.js";
import { defaultResultsPath, describeEnvironment, RESULTS_FORMAT, writeResults, type BenchResults } from "./results-file.js";
import { formatResults } from "./results-table.js";
import { runWorkload } from "./workload-runner.js";

async function main(argv: string[]): Promise<number> {
  let options: BenchOptions | "help";
  try {
    options = parseBenchOptions(argv);
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n\n${USAGE}\n`);
    return 2;
  }
  if (options === "help") {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const startedAt = new Date();
  const resultsPath = defaultResultsPath(startedAt);
  const logDir = mkdtempSync(join(tmpdir(), "stepwise-bench-"));
  const { out: _out, save: _save, keepLogs: _keepLogs, ...recorded } = options;
  const results: BenchResults = {
    format: RESULTS_FORMAT,
    startedAt: startedAt.toISOString(),
    finishedAt: "",
    ...describeEnvironment(),
    options: { ...recorded, databaseUrl: withoutPassword(recorded.databaseUrl), natsUrl: withoutPassword(recorded.natsUrl) },
    workloads: {},
    skipped: [],
    ok: false,
  };

  const session = new BenchSession({
    databaseUrl: options.databaseUrl,
    natsUrl: options.natsUrl,
    poolSize: options.poolSize,
    logDir,
    cpuProfileDir: options.cpuProf ? resultsPath.replace(/\.json$/, "-profiles") : undefined,
    capacity: options.capacity,
    embedded: options.embedded,
    retention: options.retention,
  });
  const interrupted = () => {
    log("interrupted: stopping the processes, removing the schema and the streams");
    session.close().then(
      () => process.exit(130),
      (err: unknown) => {
        log(`cleanup failed: ${String(err)}`);
        process.exit(130);
      },
    );
  };
  process.once("SIGINT", interrupted);
  process.once("SIGTERM", interrupted);
  try {
    log(`deploying (logs in ${logDir})`);
    await session.open();
    for (const name of selectWorkloads(options, session, results)) {
      log(`${name}: warming up and measuring${options.repeat > 1 ? ` ${options.repeat} times` : ""}`);
      const report = await runWorkload(session, name, options);
      results.workloads[name] = report;
      const exceeded = report.repetitions.flatMap((r) => r.limit?.exceeded ?? []);
      for (const p of exceeded) log(`${name}: FAILED, concurrency limit exceeded: ${p}`);
      if (!report.ok && exceeded.length === 0) log(`${name}: some runs were lost or wrong`);
    }
    const w1 = results.workloads.W1?.figures["runsPerSecond"];
    const w5 = results.workloads.W5?.figures["runsPerSecond"];
    results.ratios = {};
    if (w1 !== undefined && w5 !== undefined) results.ratios["W5/W1.runsPerSecond"] = w5 / w1;
    // W8 against W1 and W3 of the same invocation: the grown journal's cost.
    const w8 = results.workloads.W8?.figures;
    if (w8 && w1 !== undefined) results.ratios["W8/W1.runsPerSecond"] = w8["runsPerSecond"]! / w1;
    for (const f of ["latencyP50Ms", "latencyP99Ms"]) {
      const w3 = results.workloads.W3?.figures[f];
      if (w8 && w3 !== undefined) results.ratios[`W8/W3.${f}`] = w8[f]! / w3;
    }
    results.ok = Object.keys(results.workloads).length > 0 && Object.values(results.workloads).every((w) => w.ok);
  } catch (err) {
    results.error = err instanceof Error ? err.message : String(err);
    process.stderr.write(`${session.tails()}\n`);
  } finally {
    await session.close().catch((err: unknown) => log(`cleanup failed: ${String(err)}`));
  }
  results.finishedAt = new Date().toISOString();
  process.stdout.write(`\n${formatResults(results)}\n`);
  const paths = [...(options.save ? [resultsPath] : []), ...(options.out ? [options.out] : [])];
  writeResults(results, paths);
  for (const p of paths) log(`results written to ${p}`);
  if (results.ok && !options.keepLogs) rmSync(logDir, { recursive: true, force: true });
  else log(`logs kept in ${logDir}`);
  return results.ok ? 0 : 1;
}

/** The workloads to run: those asked for, or all the deployed SDK supports. */
function selectWorkloads(options: BenchOptions, session: BenchSession, results: BenchResults): WorkloadName[] {
  const noSleep = "the worker's SDK has no step.sleep";
  if (options.workloads) {
    for (const w of ["W4", "W7"] as const) {
      if (options.workloads.includes(w) && !session.capabilities.sleep) throw new Error(`${w} was asked for, but ${noSleep}`);
    }
    return options.workloads;
  }
  return (options.embedded ? EMBEDDED_WORKLOADS : WORKLOADS).filter((w) => {
    if ((w === "W4" || w === "W7") && !session.capabilities.sleep) {
      results.skipped.push({ name: w, reason: noSleep });
      return false;
    }
    return true;
  });
}

/** A URL as it may be written to results: without its password. */
function withoutPassword(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return url.includes("@") ? "(not recorded)" : url;
  }
}

function log(message: string): void {
  process.stderr.write(`[bench] ${message}\n`);
}

process.exitCode = await main(process.argv.slice(2));
