import { INVOKED_RUN_ENDS } from "./invocations.js";
import { FAILURE_RUN } from "./run-creation.js";
import type { Sql } from "./sql.js";
import type { PublishedRunRef, RunStatus, StoredError } from "./types.js";

// How runs end: COMPLETED with their output or FAILED with their error,
// by the execution that holds the lease; the timers and waits a run left
// go with it, and the step of the run that invoked it (step.invoke) is
// journaled in the same statement.

/** A run ended as COMPLETED now. */
export interface RunCompletion {
  /** Its end time, in ms since the epoch. */
  endedAtMs: number;
  /** Runs that invoked it (step.invoke) woken by its end: publish their work. */
  wokenRuns: PublishedRunRef[];
}

/**
 * Ends a run this execution holds as COMPLETED, dropping timers and waits
 * it left; when a step.invoke started it, journals the invoking run's step
 * with its output and wakes that run, QUEUED with a deadline of
 * `requeueAfterMs` (see INVOKED_RUN_ENDS). Null when the lease was lost.
 * One round trip.
 */
export async function completeRun(
  sql: Sql,
  runId: string,
  lease: number,
  outputJson: string,
  requeueAfterMs = 60_000,
): Promise<RunCompletion | null> {
  const rows = await sql.query<CompletionRow>(
    `WITH r AS (
       UPDATE runs SET status = 'COMPLETED', output = $3::jsonb, ended_at = now(),
         executor_id = NULL, lease_expires_at = NULL
       WHERE id = $1 AND lease = $2 AND status = 'RUNNING'
       RETURNING id, ended_at, app_id, function_id, status, output, error
     ), t AS (DELETE FROM timers WHERE run_id IN (SELECT id FROM r)),
     w AS (DELETE FROM waits WHERE run_id IN (SELECT id FROM r))
     ${INVOKED_RUN_ENDS("r", "$4")}
     ${COMPLETION_ROWS}`,
    [runId, lease, outputJson, requeueAfterMs],
  );
  return completions(rows, [runId])[0] ?? null;
}

/**
 * Ends many runs as COMPLETED in one statement, as completeRun does each;
 * one entry per run, in order, null when its lease was lost.
 */
export async function completeRuns(
  sql: Sql,
  runs: ReadonlyArray<{ runId: string; lease: number; outputJson: string }>,
  requeueAfterMs = 60_000,
): Promise<Array<RunCompletion | null>> {
  const rows = await sql.query<CompletionRow>(
    // Locked in id order (see claimRuns).
    `WITH target AS (
       SELECT id FROM runs WHERE id = ANY($1::uuid[]) AND status = 'RUNNING' ORDER BY id FOR UPDATE
     ), r AS (
       UPDATE runs SET status = 'COMPLETED', output = c.o, ended_at = now(), executor_id = NULL, lease_expires_at = NULL
       FROM unnest($1::uuid[], $2::int[], $3::jsonb[]) AS c(id, lease, o), target
       WHERE runs.id = c.id AND target.id = c.id AND runs.lease = c.lease AND runs.status = 'RUNNING'
       RETURNING runs.id, runs.ended_at, runs.app_id, runs.function_id, runs.status, runs.output, runs.error
     ), t AS (DELETE FROM timers WHERE run_id IN (SELECT id FROM r)),
     w AS (DELETE FROM waits WHERE run_id IN (SELECT id FROM r))
     ${INVOKED_RUN_ENDS("r", "$4")}
     ${COMPLETION_ROWS}`,
    [runs.map((r) => r.runId), runs.map((r) => r.lease), runs.map((r) => r.outputJson), requeueAfterMs],
  );
  return completions(
    rows,
    runs.map((r) => r.runId),
  );
}

/** The last part of the completion statements: a row per run completed, and one per parent its end woke. */
const COMPLETION_ROWS = `SELECT 'ended' AS kind, id::text AS id, floor(extract(epoch FROM ended_at) * 1000)::float8 AS ended_at_ms,
       NULL::text AS app_id, NULL::text AS function_id, NULL::int AS lease, NULL::text AS child_id FROM r
     UNION ALL
     SELECT 'woken', run_id::text, NULL, app_id, function_id, lease, child_id::text FROM invoked_woken`;

/** A row of COMPLETION_ROWS. */
type CompletionRow = {
  kind: "ended" | "woken";
  id: string;
  ended_at_ms: number | string | null;
  app_id: string | null;
  function_id: string | null;
  lease: number | null;
  child_id: string | null;
};

/** The completion of each run, in order, from COMPLETION_ROWS. */
function completions(rows: readonly CompletionRow[], runIds: readonly string[]): Array<RunCompletion | null> {
  const done = new Map<string, RunCompletion>();
  for (const r of rows) if (r.kind === "ended") done.set(r.id, { endedAtMs: Number(r.ended_at_ms), wokenRuns: [] });
  for (const r of rows) {
    if (r.kind !== "woken" || r.child_id === null) continue;
    done.get(r.child_id)?.wokenRuns.push({ runId: r.id, appId: r.app_id ?? "", functionId: r.function_id ?? "", lease: Number(r.lease) });
  }
  return runIds.map((id) => done.get(id.toLowerCase()) ?? null);
}

/**
 * The event of a run (events `e`) as the events the engine makes carry it
 * ("stepwise/run.failed", "stepwise/run.cancelled"): id, name, data, and ts
 * as RFC 3339 text in UTC.
 */
const RUN_EVENT_JSON = `jsonb_build_object('id', e.id, 'name', e.name, 'data', e.data,
           'ts', to_char(e.ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))`;

/** failRun's statement; $4 is the deadline of the onFailure run. */
const FAIL_RUN = `WITH r AS (
     UPDATE runs SET status = 'FAILED', error = $3::jsonb, ended_at = now(),
       executor_id = NULL, lease_expires_at = NULL
     WHERE id = $1 AND lease = $2 AND status = 'RUNNING'
     RETURNING id, app_id, function_id, event_id, status, output, error
   ), t AS (DELETE FROM timers WHERE run_id IN (SELECT id FROM r)),
   w AS (DELETE FROM waits WHERE run_id IN (SELECT id FROM r)),
   h AS (
     SELECT r.id AS run_id, r.app_id, r.function_id, f.config->>'onFailure' AS handler,
       jsonb_build_object('function_id', r.function_id, 'run_id', r.id, 'error', $3::jsonb,
         'event', ${RUN_EVENT_JSON}) AS data
     FROM r JOIN functions f ON f.app_id = r.app_id AND f.function_id = r.function_id
     JOIN events e ON e.id = r.event_id
     WHERE coalesce(f.config->>'onFailure', '') <> ''
   ), ${FAILURE_RUN("$4")}
   ${INVOKED_RUN_ENDS("r", "$4")}
   SELECT 'failed' AS kind, NULL AS id, NULL AS app_id, NULL AS function_id, NULL AS lease FROM r
   UNION ALL
   SELECT 'handler', id::text, app_id, function_id, lease FROM created
   UNION ALL
   SELECT 'woken', run_id::text, app_id, function_id, lease FROM invoked_woken`;

/**
 * Ends a run this execution holds as FAILED, dropping timers and waits it
 * left. When its function has an onFailure handler, creates the handler's
 * run in the same statement, triggered by a "stepwise/run.failed" event
 * carrying the failed run's event and error; that run is returned for its
 * work to be published (it gets the short deadline until markPublished).
 * When a step.invoke started it, journals the invoking run's step with an
 * InvokedRunFailed error and wakes that run (`wokenRuns`, to publish too).
 * `ok` false when the lease was lost. One round trip.
 */
export async function failRun(
  sql: Sql,
  runId: string,
  lease: number,
  error: StoredError,
  requeueAfterMs = 60_000,
): Promise<RunFailure> {
  const rows = await sql.query<{ kind: string; id: string | null; app_id: string; function_id: string; lease: number }>(
    FAIL_RUN,
    [runId, lease, JSON.stringify(error), requeueAfterMs],
  );
  const ref = (r: (typeof rows)[number]): PublishedRunRef => ({ runId: r.id ?? "", appId: r.app_id, functionId: r.function_id, lease: Number(r.lease) });
  const handler = rows.find((r) => r.kind === "handler");
  return {
    ok: rows.some((r) => r.kind === "failed"),
    failureRun: handler?.id ? ref(handler) : undefined,
    wokenRuns: rows.filter((r) => r.kind === "woken" && r.id !== null).map(ref),
  };
}

/** What failRun did. */
export interface RunFailure {
  /** False when the lease was lost. */
  ok: boolean;
  /** The run of the function's onFailure handler, to publish. */
  failureRun: PublishedRunRef | undefined;
  /** The run that invoked it (step.invoke), woken by its end: publish its work. */
  wokenRuns: PublishedRunRef[];
}

/** An event the engine made, as the event outbox holds it until JetStream stored it. */
export interface OutboxEvent {
  id: string;
  name: string;
  /** The payload, a JSON object as JSON text. */
  dataJson: string;
  tsMs: number;
}

/** What cancelRun did. */
export type CancelOutcome =
  /** Cancelled now; `executorId` and `lease` name the execution that held it when it was RUNNING. */
  | { kind: "cancelled"; was: RunStatus; executorId: string | null; lease: number; eventId: string; event: OutboxEvent | undefined }
  /** The run had ended already, with this status. */
  | { kind: "ended"; status: RunStatus }
  | { kind: "unknown" };

/** cancelRuns' statement: $1 the run ids, $2 the error to store, $3 the reason. */
const CANCEL_RUNS = `WITH target AS (
     SELECT id, status, executor_id, lease FROM runs WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE
   ), r AS (
     UPDATE runs SET status = 'CANCELLED', error = $2::jsonb, ended_at = now(),
       executor_id = NULL, lease_expires_at = NULL
     FROM target WHERE runs.id = target.id AND target.status IN ('QUEUED', 'RUNNING', 'WAITING')
     RETURNING runs.id, runs.app_id, runs.function_id, runs.event_id, target.status AS was, target.executor_id, target.lease
   ), t AS (DELETE FROM timers WHERE run_id IN (SELECT id FROM r)),
   w AS (DELETE FROM waits WHERE run_id IN (SELECT id FROM r)),
   o AS (
     INSERT INTO event_outbox (id, name, data, ts)
     SELECT 'stepwise-cancelled-' || r.id, 'stepwise/run.cancelled',
       jsonb_build_object('run_id', r.id, 'app_id', r.app_id, 'function_id', r.function_id, 'reason', $3::text,
         'event', ${RUN_EVENT_JSON}),
       now()
     FROM r JOIN events e ON e.id = r.event_id
     ON CONFLICT (id) DO NOTHING
     RETURNING id, name, data::text AS data, (extract(epoch FROM ts) * 1000)::float8 AS ts_ms
   )
   SELECT target.id::text AS run_id, target.status, r.was, r.executor_id, r.lease, r.event_id,
     o.id AS outbox_id, o.name, o.data, o.ts_ms
   FROM target LEFT JOIN r ON r.id = target.id LEFT JOIN o ON o.id = 'stepwise-cancelled-' || target.id`;

/**
 * Ends a run CANCELLED unless it ended already, whatever execution holds
 * it: no lease is needed, and the lease check of every later write (a step
 * result, a completion) then fails. Drops the run's timers and waits and,
 * in the same statement, puts the "stepwise/run.cancelled" event in the
 * event outbox. One round trip.
 */
export async function cancelRun(sql: Sql, runId: string, reason: string): Promise<CancelOutcome> {
  return (await cancelRuns(sql, [runId], reason))[0] ?? { kind: "unknown" };
}

/**
 * cancelRun for many runs in one statement, locking them in id order like
 * every statement that changes several runs; one outcome per id, in order.
 */
export async function cancelRuns(sql: Sql, runIds: readonly string[], reason: string): Promise<CancelOutcome[]> {
  if (runIds.length === 0) return [];
  const rows = await sql.query<{
    run_id: string;
    status: RunStatus;
    was: RunStatus | null;
    executor_id: string | null;
    lease: number | null;
    event_id: string | null;
    outbox_id: string | null;
    name: string | null;
    data: string | null;
    ts_ms: number | string | null;
  }>(CANCEL_RUNS, [runIds, JSON.stringify({ name: "RunCancelled", message: reason, nonRetriable: true }), reason]);
  const byId = new Map(rows.map((r) => [r.run_id, r]));
  return runIds.map((id): CancelOutcome => {
    const r = byId.get(id.toLowerCase());
    if (!r) return { kind: "unknown" };
    if (r.was === null) return { kind: "ended", status: r.status };
    return {
      kind: "cancelled",
      was: r.was,
      executorId: r.executor_id,
      lease: Number(r.lease),
      eventId: r.event_id ?? "",
      event:
        r.outbox_id !== null
          ? { id: r.outbox_id, name: r.name ?? "", dataJson: r.data ?? "{}", tsMs: Math.floor(Number(r.ts_ms)) }
          : undefined,
    };
  });
}
