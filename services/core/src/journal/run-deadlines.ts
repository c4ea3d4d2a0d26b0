import { CANCEL_OUTCOME_COLUMNS, CANCEL_TAIL, type CancelOutcome, cancelOutcome, type CancelOutcomeRow } from "./run-ends.js";
import type { Sql } from "./sql.js";

// The timeouts of a function's runs (timeouts: { start, finish }). Every
// run of such a function gets a row in run_deadlines when it is created
// (the trigger arm_runs of migration 5): kind 'start', due start_ms after
// its creation. Its first claim (claimRuns) turns it into kind 'finish',
// due finish_ms after that, or drops it. A scheduler's timer firing calls
// expireDeadlines: a run still QUEUED and never claimed at its start
// deadline, or not ended at its finish deadline, ends CANCELLED.

/** A run cancelled because a deadline passed. */
export interface ExpiredRun {
  runId: string;
  outcome: CancelOutcome & { kind: "cancelled" };
}

/** A duration in milliseconds as the reasons say it ("10s", "1500ms"). */
const DURATION_TEXT = (ms: string) =>
  `CASE WHEN ${ms}::bigint % 1000 = 0 THEN (${ms}::bigint / 1000)::text || 's' ELSE ${ms}::bigint::text || 'ms' END`;

/** expireDeadlines' statement: $1 how many deadlines at most. */
const EXPIRE_DEADLINES = `WITH due AS (
     SELECT run_id, kind, start_ms, finish_ms FROM run_deadlines WHERE due_at <= now() ORDER BY due_at LIMIT $1
   ), orphans AS (
     DELETE FROM run_deadlines d USING due
     WHERE d.run_id = due.run_id AND NOT EXISTS (SELECT 1 FROM runs WHERE runs.id = due.run_id)
   ), target AS (
     -- Runs another statement holds (a claim, a completion) are left for
     -- the next round: their deadline stays.
     SELECT runs.id, runs.status, runs.executor_id, runs.lease, due.kind,
       CASE due.kind
         WHEN 'start' THEN 'timeouts.start: not started within ' || ${DURATION_TEXT("due.start_ms")}
         ELSE 'timeouts.finish: not finished within ' || ${DURATION_TEXT("due.finish_ms")} || ' of its start' END AS reason,
       CASE due.kind
         WHEN 'start' THEN runs.status = 'QUEUED' AND runs.lease = 0
         ELSE runs.status IN ('QUEUED', 'RUNNING', 'WAITING') END AS cancel
     FROM runs JOIN due ON due.run_id = runs.id
     ORDER BY runs.id FOR UPDATE OF runs SKIP LOCKED
   ), spent AS (
     -- A deadline with nothing left to cancel. A start deadline that a
     -- claim turned into a finish one meanwhile is not this row any more.
     DELETE FROM run_deadlines d USING target
     WHERE d.run_id = target.id AND d.kind = target.kind AND d.due_at <= now() AND NOT target.cancel
   ), ${CANCEL_TAIL}
   SELECT ${CANCEL_OUTCOME_COLUMNS}`;

/**
 * Cancels the runs of up to `limit` deadlines that passed, by the
 * database's clock; schedulers share them (the runs are locked with SKIP
 * LOCKED). The reason of each says which timeout and how long it was.
 * Returns the runs cancelled, whose "stepwise/run.cancelled" events are in
 * the outbox. One round trip.
 */
export async function expireDeadlines(sql: Sql, limit: number): Promise<ExpiredRun[]> {
  const rows = await sql.query<CancelOutcomeRow>(EXPIRE_DEADLINES, [limit]);
  const out: ExpiredRun[] = [];
  for (const r of rows) {
    const outcome = cancelOutcome(r);
    if (outcome.kind === "cancelled") out.push({ runId: r.run_id, outcome });
  }
  return out;
}
