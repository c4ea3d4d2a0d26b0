// The checks of a chaos run, from the journal and the execution logs:
//   1. every event a Send answered OK for has its run,
//   2. every run ended as its function says (COMPLETED, with its output),
//   3. every step is journaled once, and every execution went on with the
//      value journaled first,
//   4. a step body ran twice only when a fault fell in its execution.
// The recovery check (5) is in recovery.ts.
import { isDeepStrictEqual } from "node:util";
import { JOURNALED_KEYS, STEP_IDS, stepTag, type ChaosOutput, type StepValue } from "./chaos-function.js";
import type { SentEventRecord } from "./event-driver.js";
import type { BodyExecution } from "./execution-log.js";
import type { FaultRecord } from "./fault-injector.js";
import type { JournalData, RunRow } from "./journal-data.js";

/** The outcome of one check. */
export interface CheckResult {
  name: string;
  ok: boolean;
  /** One line for the table. */
  summary: string;
  /** The first problems found, each naming its run, event or fault. */
  problems: string[];
}

const MAX_PROBLEMS = 25;

class Problems {
  readonly list: string[] = [];
  count = 0;
  add(p: string): void {
    this.count++;
    if (this.list.length < MAX_PROBLEMS) this.list.push(p);
  }
}

const iso = (t: number | undefined) => (t === undefined ? "never" : new Date(t).toISOString());

/** 1. No accepted event lost. */
export function checkAcceptedEvents(accepted: readonly SentEventRecord[], journal: JournalData): CheckResult {
  const byEvent = new Map<string, RunRow[]>();
  for (const r of journal.runs) byEvent.set(r.eventId, [...(byEvent.get(r.eventId) ?? []), r]);
  const problems = new Problems();
  for (const e of accepted) {
    const runs = byEvent.get(e.id) ?? [];
    if (runs.length === 0) problems.add(`event ${e.id} (n=${e.n}), answered OK at ${iso(e.acceptedAt)} after ${e.attempts} Send(s), has no run`);
    else if (runs.length > 1) problems.add(`event ${e.id} (n=${e.n}) has ${runs.length} runs: ${runs.map((r) => r.id).join(", ")}`);
  }
  return {
    name: "accepted events have their run",
    ok: problems.count === 0,
    summary: `${accepted.length - problems.count}/${accepted.length}`,
    problems: problems.list,
  };
}

/** 2. Every run COMPLETED, with the output its event's n makes. */
export function checkRunsCompleted(journal: JournalData): CheckResult {
  const problems = new Problems();
  let completed = 0;
  for (const r of journal.runs) {
    if (r.status !== "COMPLETED") {
      problems.add(`run ${r.id} (event ${r.eventId}, n=${r.n}) is ${r.status}${r.error ? `: ${JSON.stringify(r.error)}` : ""}, after ${r.executions} execution(s)`);
      continue;
    }
    const out = r.output as Partial<ChaosOutput> | null;
    const tags = r.n === undefined ? undefined : STEP_IDS.map((id) => stepTag(id, r.n!));
    if (r.n === undefined || out?.n !== r.n || !isDeepStrictEqual(out?.tags, tags)) {
      problems.add(`run ${r.id} (event ${r.eventId}, n=${r.n}) COMPLETED with ${JSON.stringify(r.output)}`);
      continue;
    }
    completed++;
  }
  return {
    name: "runs completed as the function says",
    ok: problems.count === 0 && journal.runs.length > 0,
    summary: `${completed}/${journal.runs.length}`,
    problems: journal.runs.length === 0 ? ["no run at all"] : problems.list,
  };
}

/**
 * 3. No step journaled twice: no (run, step key) with two rows; each
 * completed run journaled exactly its six step keys; the handler returned
 * the values the journal holds (the first write wins and every execution
 * goes on with it); and each journaled value was made by an execution the
 * logs show finishing for that run and step key.
 */
export function checkJournal(journal: JournalData, executions: readonly BodyExecution[]): CheckResult {
  const problems = new Problems();
  for (const k of journal.keysJournaledTwice) problems.add(`run ${k.runId} step ${k.stepKey} has ${k.rows} journal rows`);
  const byNonce = new Map(executions.map((e) => [e.nonce, e]));
  let steps = 0;
  for (const r of journal.runs) {
    if (r.status !== "COMPLETED") continue;
    const rows = journal.steps.get(r.id) ?? [];
    steps += rows.length;
    const keys = rows.map((s) => s.stepKey).sort();
    if (!isDeepStrictEqual(keys, [...JOURNALED_KEYS].sort())) {
      problems.add(`run ${r.id} journaled ${JSON.stringify(rows.map((s) => s.stepKey))}, expected ${JSON.stringify(JOURNALED_KEYS)}`);
      continue;
    }
    const out = r.output as Partial<ChaosOutput> | null;
    STEP_IDS.forEach((id, i) => {
      const key = `${id}:0`;
      const journaled = rows.find((s) => s.stepKey === key)!.output as Partial<StepValue> | null;
      const by = journaled?.by;
      if (out?.by?.[i] !== by) {
        problems.add(`run ${r.id} step ${key}: the journal holds the value of execution ${by}, the handler went on with ${out?.by?.[i]}`);
        return;
      }
      const e = by === undefined ? undefined : byNonce.get(by);
      if (!e || e.runId !== r.id || e.stepKey !== key || e.finishedAt === undefined) {
        problems.add(`run ${r.id} step ${key}: journaled value of execution ${by}, which the execution logs do not show finishing for this step`);
      }
    });
  }
  return {
    name: "each step journaled once, first write wins",
    ok: problems.count === 0,
    summary: problems.count === 0 ? `${steps} steps` : `${problems.count} problems`,
    problems: problems.list,
  };
}

/** What the duplicate check found. */
export interface DuplicateFigures {
  /** Step body executions in the logs. */
  executions: number;
  /** Executions beyond the first of their (run, step key). */
  duplicates: number;
  explained: number;
  unexplained: number;
  /** By the kind of the first fault that explains each. */
  byFault: Record<string, number>;
}

/**
 * 4. A body executed again must have a fault of a process that ran or
 * carried an earlier execution of it whose window [went down, was back]
 * overlaps the time from that earlier execution's start to this one's: the
 * worker process that ran it, the executor that worker was connected to,
 * Postgres or a NATS node (they carry every run).
 */
export function checkDuplicates(
  executions: readonly BodyExecution[],
  faults: readonly FaultRecord[],
  executorOfPid: (pid: number) => string | undefined,
  endOfRun: number,
): { result: CheckResult; figures: DuplicateFigures } {
  const groups = new Map<string, BodyExecution[]>();
  for (const e of executions) {
    const k = `${e.runId} ${e.stepKey}`;
    groups.set(k, [...(groups.get(k) ?? []), e]);
  }
  const carries = (f: FaultRecord, e: BodyExecution): boolean => {
    switch (f.kind) {
      case "postgres-restart":
      case "nats-kill":
      case "nats-wipe":
        return true;
      case "worker-kill":
        return f.pid === e.pid;
      case "executor-kill":
      case "executor-stop":
        return f.target === executorOfPid(e.pid);
      case "scheduler-kill":
      case "ingest-kill":
        return false;
    }
  };
  const figures: DuplicateFigures = { executions: executions.length, duplicates: 0, explained: 0, unexplained: 0, byFault: {} };
  const problems = new Problems();
  for (const list of groups.values()) {
    if (list.length < 2) continue;
    list.sort((a, b) => a.startedAt - b.startedAt);
    for (let i = 1; i < list.length; i++) {
      const again = list[i]!;
      figures.duplicates++;
      const earlier = list.slice(0, i);
      const fault = faults.find((f) => earlier.some((e) => carries(f, e) && f.at <= again.startedAt && (f.restoredAt ?? endOfRun) >= e.startedAt));
      if (fault) {
        figures.explained++;
        const key = fault.crash ? `crash (${fault.target})` : fault.kind;
        figures.byFault[key] = (figures.byFault[key] ?? 0) + 1;
      } else {
        figures.unexplained++;
        const runs = earlier.map((e) => `pid ${e.pid} (${executorOfPid(e.pid) ?? "?"}) ${iso(e.startedAt)}–${iso(e.finishedAt)} [${e.nonce}]`).join("; ");
        problems.add(
          `run ${again.runId} step ${again.stepKey} ran again at ${iso(again.startedAt)} in pid ${again.pid} [${again.nonce}] with no fault of a process that ran or carried it; earlier: ${runs}`,
        );
      }
    }
  }
  return {
    result: {
      name: "a body ran again only across a fault",
      ok: figures.unexplained === 0,
      summary: `${figures.duplicates} duplicates, ${figures.unexplained} unexplained`,
      problems: problems.list,
    },
    figures,
  };
}
