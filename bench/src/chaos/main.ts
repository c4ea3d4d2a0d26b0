// `npm run chaos`: the engine under random faults, then every run checked.
// Starts a private Postgres and a three-node NATS cluster, the services as
// processes and worker processes; sends events steadily while it kills,
// freezes and restarts parts at random; then checks from the journal and
// the workers' execution logs that no accepted event was lost, every run
// completed, no step was journaled twice, bodies ran twice only across a
// fault, and runs recovered from each fault within its bound. Prints the
// figures, writes them as JSON (--out), exits 0 only if every check passed.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type pg from "pg";
import { ChaosDeployment } from "./chaos-deployment.js";
import { parseChaosOptions, USAGE, type ChaosOptions } from "./chaos-options.js";
import { checkAcceptedEvents, checkDuplicates, checkJournal, checkRunsCompleted, type CheckResult } from "./checks.js";
import { EventDriver } from "./event-driver.js";
import { readExecutionLogs } from "./execution-log.js";
import { FaultInjector, type FaultRecord } from "./fault-injector.js";
import { readJournal } from "./journal-data.js";
import { Sampler } from "./sampler.js";
import { Supervisor, type CrashRecord } from "./supervisor.js";
import type { FaultKind } from "./fault-kinds.js";
import { Random } from "./random.js";
import { analyseRecovery } from "./recovery.js";
import { formatResults, type ChaosResults } from "./report.js";

const ENDED = ["COMPLETED", "FAILED", "CANCELLED", "SKIPPED"];

const t0 = Date.now();
const say = (line: string) => process.stderr.write(`[chaos +${((Date.now() - t0) / 1000).toFixed(1)}s] ${line}\n`);

/** Waits until every accepted event has its run and every run has ended; false at the timeout. */
async function settle(pool: pg.Pool, acceptedIds: string[], timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  for (;;) {
    try {
      const { rows } = await pool.query<{ open: string; of_accepted: string }>(
        `SELECT count(*) FILTER (WHERE status <> ALL($2::text[])) AS open,
                count(DISTINCT event_id) FILTER (WHERE event_id = ANY($1::text[])) AS of_accepted
         FROM runs`,
        [acceptedIds, ENDED],
      );
      const open = Number(rows[0]!.open);
      const missing = acceptedIds.length - Number(rows[0]!.of_accepted);
      if (open === 0 && missing === 0) return true;
      const now = `${open} runs not ended, ${missing} accepted events without a run`;
      if (now !== last) say(`settling: ${now}`);
      last = now;
    } catch (err) {
      say(`settling: ${String(err)}`);
    }
    if (Date.now() > deadline) return false;
    await sleep(1_000);
  }
}

/** The end of a crashed process's output, from where its error starts. */
function firstLines(tail: string): string {
  const lines = tail.split("\n").filter((l) => l.trim() !== "");
  const i = lines.findIndex((l) => /throw|Error|error:/.test(l) && !l.startsWith("{"));
  return (i >= 0 ? lines.slice(i, i + 6) : lines.slice(-6)).join(" / ").slice(0, 1200);
}

/** A crash as a fault window, for the duplicate check: a body that ran again across it is explained by it. */
function crashWindow(c: CrashRecord, i: number): FaultRecord {
  const base = c.process.replace(/\.\d+$/, "");
  const kind: FaultKind = base.startsWith("executor")
    ? "executor-kill"
    : base.startsWith("worker")
      ? "worker-kill"
      : base.startsWith("scheduler")
        ? "scheduler-kill"
        : base.startsWith("ingest")
          ? "ingest-kill"
          : base.startsWith("nats")
            ? "nats-kill"
            : "postgres-restart";
  return { id: -(i + 1), kind, target: base, pid: c.pid, executor: undefined, at: c.at, restoredAt: c.restartedAt, downMs: undefined, errors: [], crash: true };
}

async function run(options: ChaosOptions, argv: readonly string[]): Promise<number> {
  const tempLogs = options.logDir === undefined;
  const logDir = options.logDir ? resolve(options.logDir) : mkdtempSync(join(tmpdir(), "stepwise-chaos-"));
  mkdirSync(logDir, { recursive: true });
  const supervisor = new Supervisor(say);
  const deployment = new ChaosDeployment(options, logDir, supervisor);
  const random = new Random(options.seed);
  let injector: FaultInjector | undefined;
  let cleaning: Promise<void> | undefined;
  const cleanup = () => (cleaning ??= deployment.stop().catch((err: unknown) => {
    say(`cleanup: ${String(err)}`);
  }));
  process.on("exit", () => deployment.killAllNow());
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    process.once(sig, () => {
      say(`${sig}: stopping everything; logs kept in ${logDir}`);
      injector?.stop();
      void cleanup().finally(() => process.exit(sig === "SIGINT" ? 130 : 143));
    });
  }

  say(`seed ${options.seed}; logs in ${logDir}`);
  const startedAt = new Date();
  try {
    await deployment.start();
    say(`started: postgres, NATS ${deployment.nats!.url}, ${deployment.services.map((s) => s.name).join(", ")}, ${deployment.workers.map((w) => w.name).join(", ")}`);
    say(`stream replicas: ${JSON.stringify(await deployment.streamReplicas().catch((err: unknown) => ({ error: String(err) })))}`);

    const samplerPool = deployment.pool();
    const sampler = new Sampler(samplerPool, deployment.nats!.url.split(","), logDir);
    sampler.start();
    const driver = new EventDriver(deployment.ingestUrls, options.rate, options.sleepMs);
    injector = new FaultInjector(deployment, options.faults, options.faultRate, options.leaseMs, random, say);
    const progress = setInterval(() => say(`${driver.accepted.length}/${driver.events.length} events accepted, ${injector!.faults.length} faults`), 30_000);
    say(`sending ${options.rate} events/s and injecting about ${options.faultRate} faults/min for ${options.durationMs / 1000} s`);
    await Promise.all([driver.run(options.durationMs), injector.run(options.durationMs)]);
    clearInterval(progress);
    say(`faults over (${injector.faults.length}); every part is back; waiting for the last Sends`);
    await driver.drain(Math.min(60_000, options.settleMs));
    const endOfFaults = Date.now();

    const pool = deployment.pool();
    let results: ChaosResults;
    try {
      const accepted = driver.accepted;
      const settled = await settle(pool, accepted.map((e) => e.id), options.settleMs);
      say(settled ? "every run ended" : `not every run ended within ${options.settleMs / 1000} s`);
      await sampler.stop();
      await samplerPool.end();
      // After the faults: what a wiped node left of the replicas.
      const streamReplicas = await deployment.streamReplicas().catch((err: unknown) => ({ error: String(err) }));
      const journal = await readJournal(pool);
      const logs = readExecutionLogs(logDir);
      const notes: string[] = [];
      if (logs.badLines > 0) notes.push(`${logs.badLines} execution log lines could not be read (torn by a kill?)`);
      for (const f of injector.faults) {
        for (const e of f.errors) notes.push(`fault ${f.id} ${f.kind} ${f.target}: a restart failed: ${e.split("\n")[0]}`);
      }

      const executorOfPid = (pid: number) => deployment.workerPids.get(pid)?.executor.name;
      const crashes = supervisor.crashes;
      const duplicates = checkDuplicates(logs.executions, [...injector.faults, ...crashes.map(crashWindow)], executorOfPid, endOfFaults);
      const recovery = analyseRecovery(journal, driver.events, injector.faults, options.leaseMs, endOfFaults);
      const notBack = injector.faults.filter((f) => f.restoredAt === undefined);
      const checks: CheckResult[] = [
        checkAcceptedEvents(accepted, journal),
        checkRunsCompleted(journal),
        checkJournal(journal, logs.executions),
        duplicates.result,
        {
          name: "runs recovered within the bound of each fault",
          ok: recovery.overBound === 0,
          summary: `${recovery.figures.reduce((s, x) => s + x.runs, 0)} waits, ${recovery.overBound} over bound`,
          problems: recovery.violations.slice(0, 25).map((v) => `fault ${v.fault} ${v.kind} ${v.target} at ${v.faultAt}: run ${v.runId} waited ${v.waitMs ?? "forever"} ms, allowed ${v.allowedMs} ms`),
        },
        {
          name: "no process exited on its own",
          ok: crashes.length === 0,
          summary: `${crashes.length} crashes`,
          problems: crashes.map(
            (c) => `${c.process} (pid ${c.pid}) exited on its own (${c.exit}) at ${new Date(c.at).toISOString()}: ${firstLines(c.tail)}`,
          ),
        },
        {
          name: "every faulted part came back",
          ok: notBack.length === 0,
          summary: `${injector.faults.length - notBack.length}/${injector.faults.length}`,
          problems: notBack.map((f) => `fault ${f.id} ${f.kind} ${f.target} at ${new Date(f.at).toISOString()} never came back: ${f.errors.at(-1) ?? ""}`),
        },
      ];
      const faultsByKind: Record<string, number> = {};
      for (const f of injector.faults) faultsByKind[f.kind] = (faultsByKind[f.kind] ?? 0) + 1;
      const { out: _out, logDir: _logDir, keepLogs: _keep, ...shown } = options;
      results = {
        ok: checks.every((c) => c.ok),
        command: `npm run chaos -- ${argv.join(" ")}`.trim(),
        seed: options.seed,
        startedAt: startedAt.toISOString(),
        options: shown,
        logDir,
        streamReplicas,
        figures: {
          eventsSent: driver.events.length,
          eventsAccepted: accepted.length,
          eventsUnconfirmed: driver.events.length - accepted.length,
          failedSendCalls: driver.failedSends,
          eventsStored: journal.events,
          runs: journal.runs.length,
          runsCompleted: journal.runs.filter((r) => r.status === "COMPLETED").length,
          settled,
          settleMs: options.settleMs,
          faultsByKind,
          duplicates: duplicates.figures,
          recovery: recovery.figures,
        },
        checks,
        recoveryViolations: recovery.violations,
        faults: injector.faults,
        crashes,
        notes,
      };
    } finally {
      await pool.end();
    }

    const keep = !results.ok || !tempLogs || options.keepLogs;
    if (!keep) results.logDir = `${logDir} (removed: every check passed; --keep-logs keeps it)`;
    if (options.out) writeFileSync(options.out, `${JSON.stringify(results, null, 2)}\n`);
    process.stdout.write(`${formatResults(results)}\n`);
    await cleanup();
    if (!keep) rmSync(logDir, { recursive: true, force: true });
    return results.ok ? 0 : 1;
  } catch (err) {
    say(`failed: ${(err as Error).stack ?? String(err)}`);
    say(`logs kept in ${logDir}`);
    await cleanup();
    return 2;
  }
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  let options: ChaosOptions | "help";
  try {
    options = parseChaosOptions(argv);
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n\n${USAGE}\n`);
    process.exit(2);
  }
  if (options === "help") {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  process.exit(await run(options, argv));
}

await main();
