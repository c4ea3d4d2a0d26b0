import { INVOKED_CANCEL_COLUMNS, INVOKED_CANCEL_TARGETS, INVOKED_RUN_ENDS } from "./invocations.js";
import { FAILURE_RUN } from "./run-creation.js";
import type { Sql } from "./sql.js";
import type { PublishedRunRef, RunStatus, StoredError } from "./types.js";

// How runs end: COMPLETED with their output or FAILED with their error,
// by the execution that holds the lease; the timers and waits a run left
// go with it, and the step of the run that invoked it (step.invoke) is
// journaled in the same statement.

/** A run ended as COMPLETED now. */
export interface RunCompletion {
  /** Its function. */
  appId: string;
  functionId: string;
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
     w AS (DELETE FROM waits WHERE run_id IN (SELECT id FROM r)),
     cw AS (DELETE FROM cancel_waits WHERE run_id IN (SELECT id FROM r))
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
    // Locked in id order (see claimRuns). The runs come as one JSON
    // document: jsonb_to_recordset is sized the same whatever its
    // argument, so Postgres keeps one generic plan of the statement.
    `WITH c AS (
       SELECT * FROM jsonb_to_recordset($1::jsonb) AS c(id uuid, lease int, o jsonb)
     ), target AS (
       SELECT id FROM runs WHERE id IN (SELECT id FROM c) AND status = 'RUNNING' ORDER BY id FOR UPDATE
     ), r AS (
       UPDATE runs SET status = 'COMPLETED', output = c.o, ended_at = now(), executor_id = NULL, lease_expires_at = NULL
       FROM c, target
       WHERE runs.id = c.id AND target.id = c.id AND runs.lease = c.lease AND runs.status = 'RUNNING'
       RETURNING runs.id, runs.ended_at, runs.app_id, runs.function_id, runs.status, runs.output, runs.error
     ), t AS (DELETE FROM timers WHERE run_id IN (SELECT id FROM r)),
     w AS (DELETE FROM waits WHERE run_id IN (SELECT id FROM r)),
     cw AS (DELETE FROM cancel_waits WHERE run_id IN (SELECT id FROM r))
     ${INVOKED_RUN_ENDS("r", "$2")}
     ${COMPLETION_ROWS}`,
    [`[${runs.map((r) => `{"id":${JSON.stringify(r.runId)},"lease":${r.lease},"o":${r.outputJson}}`).join(",")}]`, requeueAfterMs],
  );
  return completions(
    rows,
    runs.map((r) => r.runId),
  );
}

/** The last part of the completion statements: a row per run completed, and one per parent its end woke. */
const COMPLETION_ROWS = `SELECT 'ended' AS kind, id::text AS id, floor(extract(epoch FROM ended_at) * 1000)::float8 AS ended_at_ms,
       app_id, function_id, NULL::int AS lease, NULL::text AS child_id FROM r
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
  for (const r of rows) {
    if (r.kind === "ended") done.set(r.id, { appId: r.app_id ?? "", functionId: r.function_id ?? "", endedAtMs: Number(r.ended_at_ms), wokenRuns: [] });
  }
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
   cw AS (DELETE FROM cancel_waits WHERE run_id IN (SELECT id FROM r)),
   h AS (
     SELECT r.id AS run_id, r.app_id, r.function_id, f.config->>'onFailure' AS handler,
       jsonb_build_object('function_id', r.function_id, 'run_id', r.id, 'error', $3::jsonb,
         'event', ${RUN_EVENT_JSON}) AS data
     FROM r JOIN functions f ON f.app_id = r.app_id AND f.function_id = r.function_id
     JOIN events e ON e.id = r.event_id
     WHERE coalesce(f.config->>'onFailure', '') <> ''
   ), ${FAILURE_RUN("$4")}
   ${INVOKED_RUN_ENDS("r", "$4")}
   SELECT 'failed' AS kind, NULL AS id, app_id, function_id, NULL AS lease FROM r
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
  return (await failRunOf(sql, runId, lease, error, requeueAfterMs)).failure;
}

/** failRun, with the function of the run when it failed now (for the journal store's run metrics). */
export async function failRunOf(
  sql: Sql,
  runId: string,
  lease: number,
  error: StoredError,
  requeueAfterMs = 60_000,
): Promise<{ failure: RunFailure; failed: { appId: string; functionId: string } | undefined }> {
  const rows = await sql.query<{ kind: string; id: string | null; app_id: string; function_id: string; lease: number }>(
    FAIL_RUN,
    [runId, lease, JSON.stringify(error), requeueAfterMs],
  );
  const ref = (r: (typeof rows)[number]): PublishedRunRef => ({ runId: r.id ?? "", appId: r.app_id, functionId: r.function_id, lease: Number(r.lease) });
  const handler = rows.find((r) => r.kind === "handler");
  const failed = rows.find((r) => r.kind === "failed");
  return {
    failure: {
      ok: failed !== undefined,
      failureRun: handler?.id ? ref(handler) : undefined,
      wokenRuns: rows.filter((r) => r.kind === "woken" && r.id !== null).map(ref),
    },
    failed: failed ? { appId: failed.app_id, functionId: failed.function_id } : undefined,
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
  | {
      kind: "cancelled";
      /** The run's function. */
      appId: string;
      functionId: string;
      was: RunStatus;
      executorId: string | null;
      lease: number;
      eventId: string;
      reason: string;
      event: OutboxEvent | undefined;
      /** The runs it invoked (step.invoke), and theirs, cancelled with it in the same statement. */
      invoked?: Array<{ runId: string; outcome: CancelOutcome & { kind: "cancelled" } }>;
      /** The run that invoked it, woken because its step now holds InvokedRunCancelled: publish its work. */
      wokenRun?: PublishedRunRef;
    }
  /** The run had ended already, with this status. */
  | { kind: "ended"; status: RunStatus }
  | { kind: "unknown" };

/**
 * The part of a statement that cancels runs. `target` must select, locked
 * in id order, the runs considered: id, status, executor_id, lease (as
 * they were), reason (text), and cancel (whether to cancel it: only a run
 * that has not ended may be). Each cancelled run ends CANCELLED with a
 * RunCancelled error carrying its reason, its timers, waits, cancel waits
 * and deadline go, and its "stepwise/run.cancelled" event goes in the
 * event outbox. `r` returns the cancelled runs (was: their status before),
 * `o` the outbox events. The runs a cancelled run invoked (step.invoke)
 * that have not ended are cancelled with it, recursively (see
 * INVOKED_CANCEL_TARGETS); a run cancelled on its own that a step invoked
 * journals that step with an InvokedRunCancelled error and wakes its run
 * (INVOKED_RUN_ENDS).
 */
export const CANCEL_TAIL = `${INVOKED_CANCEL_TARGETS}, r AS (
     UPDATE runs SET status = 'CANCELLED',
       error = jsonb_build_object('name', 'RunCancelled', 'message', cancel_target.reason, 'nonRetriable', true),
       ended_at = now(), executor_id = NULL, lease_expires_at = NULL
     FROM cancel_target WHERE runs.id = cancel_target.id AND cancel_target.cancel
       AND cancel_target.status IN ('QUEUED', 'RUNNING', 'WAITING')
     RETURNING runs.id, runs.app_id, runs.function_id, runs.event_id, cancel_target.status AS was, cancel_target.executor_id,
       cancel_target.lease, cancel_target.reason, runs.status, runs.output, runs.error
   ), t AS (DELETE FROM timers WHERE run_id IN (SELECT id FROM r)),
   w AS (DELETE FROM waits WHERE run_id IN (SELECT id FROM r)),
   cw AS (DELETE FROM cancel_waits WHERE run_id IN (SELECT id FROM r)),
   dl AS (DELETE FROM run_deadlines WHERE run_id IN (SELECT id FROM r)),
   o AS (
     INSERT INTO event_outbox (id, name, data, ts)
     SELECT 'stepwise-cancelled-' || r.id, 'stepwise/run.cancelled',
       jsonb_build_object('run_id', r.id, 'app_id', r.app_id, 'function_id', r.function_id, 'reason', r.reason,
         'event', ${RUN_EVENT_JSON}),
       now()
     FROM r JOIN events e ON e.id = r.event_id
     ON CONFLICT (id) DO NOTHING
     RETURNING id, name, data::text AS data, (extract(epoch FROM ts) * 1000)::float8 AS ts_ms
   )
   -- Its publish deadline is the default requeue delay: the tail serves
   -- statements of several services, and announceCancelled publishes at once.
   ${INVOKED_RUN_ENDS("r", "60000")}`;

/** The columns a statement ending in CANCEL_TAIL selects per target run, read by cancelOutcome. */
export const CANCEL_OUTCOME_COLUMNS = `target.id::text AS run_id, target.status, r.app_id, r.function_id, r.was, r.executor_id, r.lease, r.event_id, r.reason,
     o.id AS outbox_id, o.name, o.data, o.ts_ms, ${INVOKED_CANCEL_COLUMNS}
   FROM target LEFT JOIN r ON r.id = target.id LEFT JOIN o ON o.id = 'stepwise-cancelled-' || target.id
     LEFT JOIN invoked_woken iw ON iw.child_id = target.id`;

/** A row of CANCEL_OUTCOME_COLUMNS. */
export type CancelOutcomeRow = {
  run_id: string;
  status: RunStatus;
  app_id: string | null;
  function_id: string | null;
  was: RunStatus | null;
  executor_id: string | null;
  lease: number | null;
  event_id: string | null;
  reason: string | null;
  outbox_id: string | null;
  name: string | null;
  data: string | null;
  ts_ms: number | string | null;
  /** The runs cancelled with it because it invoked them (rows of the same columns, but these). */
  invoked?: InvokedCancelRow[] | null;
  woken_id?: string | null;
  woken_app_id?: string | null;
  woken_function_id?: string | null;
  woken_lease?: number | null;
};

/** A run cancelled with the one that invoked it, as CANCEL_OUTCOME_COLUMNS lists it. */
type InvokedCancelRow = Omit<CancelOutcomeRow, "status" | "invoked" | "woken_id" | "woken_app_id" | "woken_function_id" | "woken_lease">;

/** What a row of CANCEL_OUTCOME_COLUMNS says happened to its run. */
export function cancelOutcome(r: CancelOutcomeRow): CancelOutcome {
  if (r.was === null) return { kind: "ended", status: r.status };
  const outcome: CancelOutcome & { kind: "cancelled" } = {
    kind: "cancelled",
    appId: r.app_id ?? "",
    functionId: r.function_id ?? "",
    was: r.was,
    executorId: r.executor_id,
    lease: Number(r.lease),
    eventId: r.event_id ?? "",
    reason: r.reason ?? "",
    event:
      r.outbox_id !== null
        ? { id: r.outbox_id, name: r.name ?? "", dataJson: r.data ?? "{}", tsMs: Math.floor(Number(r.ts_ms)) }
        : undefined,
  };
  const invoked = (r.invoked ?? []).flatMap((k) => {
    const o = cancelOutcome({ ...k, status: "CANCELLED" });
    return o.kind === "cancelled" ? [{ runId: k.run_id, outcome: o }] : [];
  });
  if (invoked.length > 0) outcome.invoked = invoked;
  if (r.woken_id) {
    outcome.wokenRun = { runId: r.woken_id, appId: r.woken_app_id ?? "", functionId: r.woken_function_id ?? "", lease: Number(r.woken_lease) };
  }
  return outcome;
}

/** cancelRuns' statement: $1 the run ids, $2 their reasons. */
const CANCEL_RUNS = `WITH reasons AS (
     SELECT DISTINCT ON (id) * FROM unnest($1::uuid[], $2::text[]) AS x(id, reason)
   ), target AS (
     SELECT runs.id, runs.status, runs.executor_id, runs.lease, reasons.reason, true AS cancel
     FROM runs JOIN reasons ON reasons.id = runs.id ORDER BY runs.id FOR UPDATE OF runs
   ), ${CANCEL_TAIL}
   SELECT ${CANCEL_OUTCOME_COLUMNS}`;

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
export async function cancelRuns(sql: Sql, runIds: readonly string[], reason: string | readonly string[]): Promise<CancelOutcome[]> {
  if (runIds.length === 0) return [];
  const reasons = typeof reason === "string" ? runIds.map(() => reason) : reason;
  const rows = await sql.query<CancelOutcomeRow>(CANCEL_RUNS, [runIds, reasons]);
  const byId = new Map(rows.map((r) => [r.run_id, r]));
  return runIds.map((id): CancelOutcome => {
    const r = byId.get(id.toLowerCase());
    return r ? cancelOutcome(r) : { kind: "unknown" };
  });
}

/** cancelInvokedRuns' statement: $1 the invoking run. */
const CANCEL_INVOKED_RUNS = `WITH target AS (
     SELECT runs.id, runs.status, runs.executor_id, runs.lease,
       'run ' || p.id || ', which invoked it, was cancelled: ' || coalesce(p.error->>'message', '') AS reason, true AS cancel
     FROM invocations i JOIN runs ON runs.id = i.child_run_id JOIN runs p ON p.id = i.parent_run_id AND p.status = 'CANCELLED'
     WHERE i.parent_run_id = $1
     ORDER BY runs.id FOR UPDATE OF runs
   ), ${CANCEL_TAIL}
   SELECT ${CANCEL_OUTCOME_COLUMNS}`;

/**
 * Cancels, as cancelRuns does, the runs that a CANCELLED run invoked and
 * that have not ended, and theirs; nothing when the run was not cancelled.
 * For the one race the cancel's own statement cannot see: a suspension
 * that started children while a cancel of the run waited for its lock
 * (the cancel reads the children as of before). Returns the runs
 * cancelled. One round trip.
 */
export async function cancelInvokedRuns(sql: Sql, runId: string): Promise<Array<{ runId: string; outcome: CancelOutcome }>> {
  const rows = await sql.query<CancelOutcomeRow>(CANCEL_INVOKED_RUNS, [runId]);
  return rows.map((r) => ({ runId: r.run_id, outcome: cancelOutcome(r) })).filter((c) => c.outcome.kind === "cancelled");
}
