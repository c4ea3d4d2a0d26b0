import { FAILURE_RUN } from "./run-creation.js";
import type { Sql } from "./sql.js";
import type { PublishedRunRef, RunStatus, StoredError } from "./types.js";

// How runs end: COMPLETED with their output or FAILED with their error,
// by the execution that holds the lease; the timers and waits a run left
// go with it.

/**
 * Ends a run this execution holds as COMPLETED, dropping timers and waits
 * it left. Returns its end time (ms since the epoch), null when the lease was lost. One round trip.
 */
export async function completeRun(sql: Sql, runId: string, lease: number, outputJson: string): Promise<number | null> {
  const rows = await sql.query<{ ended_at_ms: number | string }>(
    `WITH r AS (
       UPDATE runs SET status = 'COMPLETED', output = $3::jsonb, ended_at = now(),
         executor_id = NULL, lease_expires_at = NULL
       WHERE id = $1 AND lease = $2 AND status = 'RUNNING' RETURNING id, ended_at
     ), t AS (DELETE FROM timers WHERE run_id IN (SELECT id FROM r)),
     w AS (DELETE FROM waits WHERE run_id IN (SELECT id FROM r))
     SELECT floor(extract(epoch FROM ended_at) * 1000)::float8 AS ended_at_ms FROM r`,
    [runId, lease, outputJson],
  );
  return rows[0] ? Number(rows[0].ended_at_ms) : null;
}

/**
 * Ends many runs as COMPLETED in one statement, as completeRun does each;
 * one entry per run, in order: its end time, null when its lease was lost.
 */
export async function completeRuns(sql: Sql, runs: ReadonlyArray<{ runId: string; lease: number; outputJson: string }>): Promise<Array<number | null>> {
  const rows = await sql.query<{ id: string; ended_at_ms: number | string }>(
    // Locked in id order (see claimRuns).
    `WITH target AS (
       SELECT id FROM runs WHERE id = ANY($1::uuid[]) AND status = 'RUNNING' ORDER BY id FOR UPDATE
     ), r AS (
       UPDATE runs SET status = 'COMPLETED', output = c.o, ended_at = now(), executor_id = NULL, lease_expires_at = NULL
       FROM unnest($1::uuid[], $2::int[], $3::jsonb[]) AS c(id, lease, o), target
       WHERE runs.id = c.id AND target.id = c.id AND runs.lease = c.lease AND runs.status = 'RUNNING'
       RETURNING runs.id, runs.ended_at
     ), t AS (DELETE FROM timers WHERE run_id IN (SELECT id FROM r)),
     w AS (DELETE FROM waits WHERE run_id IN (SELECT id FROM r))
     SELECT id, floor(extract(epoch FROM ended_at) * 1000)::float8 AS ended_at_ms FROM r`,
    [runs.map((r) => r.runId), runs.map((r) => r.lease), runs.map((r) => r.outputJson)],
  );
  const done = new Map(rows.map((r) => [r.id, Number(r.ended_at_ms)]));
  return runs.map((r) => done.get(r.runId) ?? null);
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
     RETURNING id, app_id, function_id, event_id
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
   SELECT 'failed' AS kind, NULL AS id, NULL AS app_id, NULL AS function_id, NULL AS lease FROM r
   UNION ALL
   SELECT 'handler', id::text, app_id, function_id, lease FROM created`;

/**
 * Ends a run this execution holds as FAILED, dropping timers and waits it
 * left. When its function has an onFailure handler, creates the handler's
 * run in the same statement, triggered by a "stepwise/run.failed" event
 * carrying the failed run's event and error; that run is returned for its
 * work to be published (it gets the short deadline until markPublished).
 * `ok` false when the lease was lost. One round trip.
 */
export async function failRun(
  sql: Sql,
  runId: string,
  lease: number,
  error: StoredError,
  requeueAfterMs = 60_000,
): Promise<{ ok: boolean; failureRun: PublishedRunRef | undefined }> {
  const rows = await sql.query<{ kind: string; id: string | null; app_id: string; function_id: string; lease: number }>(
    FAIL_RUN,
    [runId, lease, JSON.stringify(error), requeueAfterMs],
  );
  const handler = rows.find((r) => r.kind === "handler");
  return {
    ok: rows.some((r) => r.kind === "failed"),
    failureRun: handler?.id
      ? { runId: handler.id, appId: handler.app_id, functionId: handler.function_id, lease: Number(handler.lease) }
      : undefined,
  };
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
