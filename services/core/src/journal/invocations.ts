import { createHash } from "node:crypto";
import { INVOKED_RUNS } from "./run-creation.js";
import type { Sql } from "./sql.js";
import type { AwaitRecord } from "./timer-store.js";
import { WOKEN_RUNS } from "./timer-store.js";
import type { PublishedRunRef } from "./types.js";

// step.invoke: a run (the parent) starts a run of another function (the
// child) and suspends until it ends. The table `invocations` links each
// child to its parent's step. The parent's suspension creates the child
// (startInvocations, before TimerStore.suspend), the child's end journals
// the parent's step and wakes it in the statement that ends the child
// (INVOKED_RUN_ENDS, in run-ends.ts), a timer of kind 'invoke' gives up at
// the step's timeout (INVOKE_TIMEOUT_ERROR, in TimerStore.fireDue), and
// cancelling the parent cancels its children in the cancel's statement
// (INVOKED_CANCEL_TARGETS, in CANCEL_TAIL).
//
// Locking: the child's end locks the child, then its parent; cancelling a
// tree locks the parent, then its children. When both happen at once,
// Postgres detects the deadlock and fails one statement, which its caller
// retries (the executor retries a run's end within its lease; a CancelRun
// answers with the error and can be sent again).

/** An invoke await of a suspension. */
export type InvokeAwait = AwaitRecord & { kind: "invoke" };

/** What startInvocations did. */
export type InvocationOutcome =
  | { kind: "lease-lost" }
  /** The children created now, QUEUED with the short deadline: publish their work. */
  | { kind: "started"; runs: PublishedRunRef[] };

/**
 * The id of the event of the child a step invokes: one per parent run and
 * step key, so the same suspension made again finds the same child.
 */
export function invokeEventId(parentRunId: string, stepKey: string): string {
  return `stepwise-invoke-${parentRunId}-${createHash("sha256").update(stepKey).digest("hex").slice(0, 16)}`;
}

/** The name of the event an invoked run gets. */
export const INVOKED_EVENT_NAME = "stepwise/function.invoked";

/** startInvocations' statement: $1 the parent, $2 its lease, $3 the invokes, $4 the children's publish deadline (ms). */
const START_INVOCATIONS = `WITH held AS (
     SELECT id FROM runs WHERE id = $1 AND lease = $2 AND status = 'RUNNING' FOR UPDATE
   ), x AS (
     SELECT x.* FROM jsonb_to_recordset($3::jsonb) AS x(k text, i text, a text, f text, ev text, d jsonb)
     WHERE EXISTS (SELECT 1 FROM held)
   ), known AS (
     SELECT x.* FROM x WHERE EXISTS (SELECT 1 FROM functions f WHERE f.app_id = x.a AND f.function_id = x.f)
   ), ev AS (
     INSERT INTO events (id, name, data, ts, received_at)
     SELECT known.ev, '${INVOKED_EVENT_NAME}', known.d, now(), now() FROM known
     ON CONFLICT (id) DO NOTHING
   ), ${INVOKED_RUNS("known", "$4")}, linked AS (
     INSERT INTO invocations (child_run_id, parent_run_id, step_key, step_id)
     SELECT created.id, $1, known.k, known.i
     FROM created JOIN known ON known.ev = created.event_id AND known.a = created.app_id AND known.f = created.function_id
     ON CONFLICT (child_run_id) DO NOTHING
   ), not_found AS (
     INSERT INTO steps (run_id, step_key, step_id, attempt, started_at, ended_at, error, kind)
     SELECT $1, x.k, x.i, 1, now(), now(),
       jsonb_build_object('name', 'FunctionNotFound', 'nonRetriable', true,
         'message', 'step.invoke: function ' || x.a || '/' || x.f || ' is not registered'),
       'invoke'
     FROM x WHERE NOT EXISTS (SELECT 1 FROM known WHERE known.k = x.k)
     ON CONFLICT (run_id, step_key) DO NOTHING
   )
   SELECT 'held' AS kind, NULL AS id, NULL AS app_id, NULL AS function_id, NULL AS lease FROM held
   UNION ALL
   SELECT 'child', id::text, app_id, function_id, lease FROM created`;

/**
 * Starts the children of a suspension's invoke awaits, if this execution
 * still holds the parent (its lease, RUNNING; the row is locked): for a
 * registered function, stores the child's event ("stepwise/function.invoked"
 * with the await's data, id from invokeEventId) and creates its run QUEUED
 * with a deadline of `deadlineMs`, linked to the parent's step; for a
 * function never registered, journals the step with a non-retriable
 * FunctionNotFound error. Idempotent: the event id names the parent and
 * the step, so suspending again on the same step creates nothing. Returns
 * the children created now. One round trip; call it before the suspension
 * (TimerStore.suspend), whose resume check then sees a step journaled here
 * or by a child that ended first.
 */
export async function startInvocations(
  sql: Sql,
  parentRunId: string,
  lease: number,
  invokes: readonly InvokeAwait[],
  deadlineMs: number,
): Promise<InvocationOutcome> {
  if (invokes.length === 0) return { kind: "started", runs: [] };
  const rows = await sql.query<{ kind: string; id: string | null; app_id: string; function_id: string; lease: number }>(
    START_INVOCATIONS,
    [parentRunId, lease, invokesDocument(parentRunId, invokes), deadlineMs],
  );
  if (!rows.some((r) => r.kind === "held")) return { kind: "lease-lost" };
  return {
    kind: "started",
    runs: rows.flatMap((r) =>
      r.kind === "child" && r.id !== null ? [{ runId: r.id, appId: r.app_id, functionId: r.function_id, lease: Number(r.lease) }] : [],
    ),
  };
}

/**
 * The part of a statement that ends runs which resolves the steps that
 * invoked them: given `ended` (id, app_id, function_id, status, output,
 * error of the runs ended in the statement), each ended run with an
 * invocation journals its parent's step, first write wins: its output when
 * COMPLETED, a non-retriable InvokedRunFailed or InvokedRunCancelled error
 * (its own error as the cause) otherwise. The step's timeout goes, and
 * only the parents whose step was journaled now are woken (one that timed
 * out already is not woken again). A parent that ends in the same
 * statement is left alone. `invoked_woken` holds the parents to publish
 * (run_id, app_id, function_id, lease) with the child that woke each
 * (child_id). Follows a CTE; `requeueParam` is the publish deadline (ms).
 * The invocations probe is one index lookup per ended run.
 */
export function INVOKED_RUN_ENDS(ended: string, requeueParam: string): string {
  return `, invoked_end AS (
         SELECT i.parent_run_id, i.step_key, i.step_id, e.id AS child_id, e.status, e.output, e.error,
           e.app_id || '/' || e.function_id AS fn
         FROM ${ended} e JOIN invocations i ON i.child_run_id = e.id
         WHERE i.parent_run_id NOT IN (SELECT id FROM ${ended})
           AND EXISTS (SELECT 1 FROM runs p WHERE p.id = i.parent_run_id AND p.status IN ('QUEUED', 'RUNNING', 'WAITING'))
       ), invoked_step AS (
         INSERT INTO steps (run_id, step_key, step_id, attempt, started_at, ended_at, output, error, kind)
         SELECT parent_run_id, step_key, step_id, 1, now(), now(),
           CASE WHEN status = 'COMPLETED' THEN coalesce(output, 'null'::jsonb) END,
           CASE WHEN status <> 'COMPLETED' THEN jsonb_strip_nulls(jsonb_build_object(
             'name', CASE WHEN status = 'FAILED' THEN 'InvokedRunFailed' ELSE 'InvokedRunCancelled' END,
             'message', 'run ' || child_id || ' of ' || fn || CASE WHEN status = 'FAILED' THEN ' failed' ELSE ' was cancelled' END
               || coalesce(': ' || (error->>'message'), ''),
             'cause', error, 'nonRetriable', true)) END,
           'invoke'
         FROM invoked_end
         ON CONFLICT (run_id, step_key) DO NOTHING
         RETURNING run_id, step_key
       ), invoked_timer AS (
         DELETE FROM timers t USING invoked_step s WHERE t.run_id = s.run_id AND t.step_key = s.step_key
       )
       ${WOKEN_RUNS("SELECT run_id FROM invoked_step", requeueParam)}, invoked_woken AS (
         SELECT DISTINCT ON (w.id) w.id AS run_id, w.app_id, w.function_id, w.lease, ie.child_id
         FROM woken w JOIN invoked_end ie ON ie.parent_run_id = w.id
         WHERE w.status = 'QUEUED'
         ORDER BY w.id
       )`;
}

/**
 * The first part of CANCEL_TAIL (run-ends.ts): `cancel_target` is `target`
 * (id, status, executor_id, lease, reason, cancel) and, locked after it in
 * id order, the runs that the runs `target` cancels invoked and that have
 * not ended, and the runs those invoked, recursively, each with the reason
 * "run <parent>, which invoked it, was cancelled: <reason>".
 * `invoked_tree` says which target each was cancelled with (root_id).
 */
export const INVOKED_CANCEL_TARGETS = `invoked_tree AS (
     WITH RECURSIVE d(id, parent_id, root_id, reason) AS (
       SELECT i.child_run_id, i.parent_run_id, target.id, target.reason
       FROM target JOIN invocations i ON i.parent_run_id = target.id
       WHERE target.cancel AND target.status IN ('QUEUED', 'RUNNING', 'WAITING')
       UNION
       SELECT i.child_run_id, i.parent_run_id, d.root_id, d.reason
       FROM d JOIN invocations i ON i.parent_run_id = d.id
       WHERE EXISTS (SELECT 1 FROM runs c WHERE c.id = d.id AND c.status IN ('QUEUED', 'RUNNING', 'WAITING'))
     )
     SELECT DISTINCT ON (d.id) d.id, d.root_id,
       'run ' || d.parent_id || ', which invoked it, was cancelled: ' || d.reason AS reason
     FROM d WHERE d.id NOT IN (SELECT id FROM target)
       AND EXISTS (SELECT 1 FROM runs c WHERE c.id = d.id AND c.status IN ('QUEUED', 'RUNNING', 'WAITING'))
     ORDER BY d.id, d.root_id
   ), invoked_target AS (
     SELECT runs.id, runs.status, runs.executor_id, runs.lease, invoked_tree.reason, true AS cancel
     FROM runs JOIN invoked_tree ON invoked_tree.id = runs.id
     ORDER BY runs.id FOR UPDATE OF runs
   ), cancel_target AS (
     SELECT id, status, executor_id, lease, reason, cancel FROM target
     UNION ALL
     SELECT id, status, executor_id, lease, reason, cancel FROM invoked_target
   )`;

/**
 * Columns of CANCEL_OUTCOME_COLUMNS (run-ends.ts), per target run: the
 * runs cancelled with it because it invoked them (`invoked`, a JSON array
 * of the columns of a cancel outcome), and the run that invoked it, woken
 * because it was cancelled on its own (`woken_*`). Needs `LEFT JOIN
 * invoked_woken iw ON iw.child_id = target.id`.
 */
export const INVOKED_CANCEL_COLUMNS = `(SELECT coalesce(jsonb_agg(jsonb_build_object('run_id', kr.id, 'app_id', kr.app_id, 'function_id', kr.function_id, 'was', kr.was,
       'executor_id', kr.executor_id, 'lease', kr.lease, 'event_id', kr.event_id, 'reason', kr.reason,
       'outbox_id', ko.id, 'name', ko.name, 'data', ko.data, 'ts_ms', ko.ts_ms) ORDER BY kr.id), '[]'::jsonb)
     FROM r kr JOIN invoked_tree it ON it.id = kr.id LEFT JOIN o ko ON ko.id = 'stepwise-cancelled-' || kr.id
     WHERE it.root_id = target.id) AS invoked,
     iw.run_id::text AS woken_id, iw.app_id AS woken_app_id, iw.function_id AS woken_function_id, iw.lease AS woken_lease`;

/**
 * The error of an invoke's step when its timer (`f`: run_id, step_key,
 * due_at) fires before the invoked run ended, naming the run.
 */
export function INVOKE_TIMEOUT_ERROR(f: string): string {
  return `jsonb_build_object('name', 'InvokeTimeout', 'nonRetriable', true,
           'message', 'step.invoke: the invoked run'
             || coalesce((SELECT ' ' || c.id || ' of ' || c.app_id || '/' || c.function_id
                          FROM invocations i JOIN runs c ON c.id = i.child_run_id
                          WHERE i.parent_run_id = ${f}.run_id AND i.step_key = ${f}.step_key LIMIT 1), '')
             || ' did not end by the timeout, '
             || to_char(${f}.due_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') || '; it keeps running')`;
}

/** A woken parent as the statement returns it. */
export interface InvokedWokenRow {
  run_id: string;
  app_id: string;
  function_id: string;
  lease: number;
  child_id: string;
}

/**
 * The invokes as one JSON array for jsonb_to_recordset, each one's data
 * embedded as the JSON text it already is (the executor parsed it to check
 * it is an object).
 */
function invokesDocument(parentRunId: string, invokes: readonly InvokeAwait[]): string {
  return `[${invokes
    .map(
      (a) =>
        `{"k":${JSON.stringify(a.stepKey)},"i":${JSON.stringify(a.stepId)},"a":${JSON.stringify(a.appId)},"f":${JSON.stringify(a.functionId)},` +
        `"ev":${JSON.stringify(invokeEventId(parentRunId, a.stepKey))},"d":${a.dataJson.trim() === "" ? "{}" : a.dataJson}}`,
    )
    .join(",")}]`;
}
