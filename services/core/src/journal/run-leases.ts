import type { Sql } from "./sql.js";
import {
  DEFAULT_QUEUED_BACKSTOP_MS,
  type ClaimedRun,
  type PublishedRun,
  type PublishedRunRef,
  type StoredError,
} from "./types.js";

// Who holds a run: an executor claims it (bumping its lease, which fences
// older executions), renews the leases it holds, or hands it back; the
// reconciler takes back the runs whose lease lapsed and the QUEUED runs
// whose work was not confirmed published.

/**
 * Claims a run for an executor: QUEUED, or RUNNING with a lapsed lease.
 * Bumps the lease (fencing older executions) and returns the event and
 * the journal, or null when the run is not claimable (held elsewhere,
 * finished, unknown). One round trip.
 */
export async function claimRun(sql: Sql, runId: string, executorId: string, leaseMs: number): Promise<ClaimedRun | null> {
  return (await claimRuns(sql, [runId], executorId, leaseMs))[0] ?? null;
}

/**
 * Claims many runs in one statement, as claimRun does each; the result
 * has one entry per id, in order, null for a run not claimable.
 */
export async function claimRuns(sql: Sql, runIds: readonly string[], executorId: string, leaseMs: number): Promise<Array<ClaimedRun | null>> {
  const rows = await sql.query<ClaimRow>(
    // The rows are locked in id order, as every statement that updates
    // several runs does: two of them locking the same runs in different
    // orders would deadlock, and Postgres only notices after a second.
    `WITH target AS (
       SELECT id FROM runs
       -- A run of a function with concurrency limits only with a slot (concurrency-slots.ts).
       -- The ids come as a JSON array: jsonb_array_elements_text is sized the
       -- same whatever its argument, so Postgres keeps one generic plan.
       WHERE id IN (SELECT x::uuid FROM jsonb_array_elements_text($1::jsonb) AS x)
         AND ((status = 'QUEUED' AND (slot IS NULL OR slot = 'granted'))
         OR (status = 'RUNNING' AND lease_expires_at < now()))
       ORDER BY id FOR UPDATE
     ), claimed AS (
       UPDATE runs SET status = 'RUNNING', lease = lease + 1, executor_id = $2,
         lease_expires_at = now() + $3 * interval '1 millisecond',
         started_at = coalesce(started_at, now())
       FROM target WHERE runs.id = target.id
       RETURNING runs.id, app_id, function_id, event_id, lease, wakes, created_at, started_at, origin_run_id, origin_step_key, window_id, trace_parent
     ), finish AS (
       -- The first claim starts the run: a start deadline gives way to
       -- the finish one, or goes (see run-deadlines.ts).
       UPDATE run_deadlines d SET kind = 'finish', due_at = now() + d.finish_ms * interval '1 millisecond'
       FROM claimed c WHERE c.lease = 1 AND d.run_id = c.id AND d.kind = 'start' AND d.finish_ms IS NOT NULL
     ), started AS (
       DELETE FROM run_deadlines d USING claimed c
       WHERE c.lease = 1 AND d.run_id = c.id AND d.kind = 'start' AND d.finish_ms IS NULL
     )
     SELECT c.id, c.app_id, c.function_id, c.lease, c.wakes, c.origin_run_id IS NOT NULL AS derived, c.trace_parent,
       e.id AS event_id, e.name AS event_name,
       e.data::text AS event_data, (extract(epoch FROM e.ts) * 1000)::float8 AS event_ts_ms,
       floor(extract(epoch FROM c.created_at) * 1000)::float8 AS created_at_ms,
       floor(extract(epoch FROM c.started_at) * 1000)::float8 AS started_at_ms,
       (SELECT count(*) FROM runs o WHERE o.event_id = c.event_id)::int AS event_runs,
       -- A first claim (lease 1) has nothing journaled yet: only a
       -- lease holder writes steps and attempts, but for the steps a
       -- replay copied.
       CASE WHEN c.lease = 1 AND c.origin_step_key IS NULL THEN '[]'::json ELSE
         (SELECT coalesce(json_agg(json_build_object('k', s.step_key, 'o', s.output::text, 'e', s.error) ORDER BY s.seq), '[]'::json)
            FROM steps s WHERE s.run_id = c.id) END AS journal,
       CASE WHEN c.lease = 1 THEN '{}'::json ELSE
         (SELECT coalesce(json_object_agg(a.step_key, json_build_object('n', a.n, 'r', a.r)), '{}'::json)
            FROM (SELECT step_key, max(attempt) AS n,
                    (extract(epoch FROM (array_agg(retry_at ORDER BY attempt DESC))[1]) * 1000)::float8 AS r
                  FROM step_attempts WHERE run_id = c.id GROUP BY step_key) a) END AS attempts,
       -- A run made of an event window (debounce, batchEvents) gets all its events.
       CASE WHEN c.window_id IS NULL THEN NULL ELSE
         (SELECT json_agg(json_build_object('id', x.id, 'n', x.name, 'd', x.data::text, 't', (extract(epoch FROM x.ts) * 1000)::float8)
            ORDER BY x.received_at, x.id)
            FROM window_events w JOIN events x ON x.id = w.event_id WHERE w.window_id = c.window_id) END AS events
     FROM claimed c JOIN events e ON e.id = c.event_id`,
    [JSON.stringify(runIds), executorId, leaseMs],
  );
  const byId = new Map(rows.map((r) => [r.id, r]));
  // An id given twice (two work messages of one run claimed together)
  // gets its claim once: the other is a duplicate, as a second claimRun
  // would find the run held.
  return runIds.map((id) => {
    const r = byId.get(id);
    byId.delete(id);
    return r ? toClaimedRun(r) : null;
  });
}

/**
 * Hands a run this execution holds back to the queue (its worker vanished
 * or the executor drains), with a deadline: unless markPublished confirms
 * its work was published first, the reconciler publishes it then. False
 * when the lease was lost.
 */
export async function requeueRun(sql: Sql, runId: string, lease: number, requeueAfterMs: number): Promise<boolean> {
  const rows = await sql.query(
    `UPDATE runs SET status = 'QUEUED', executor_id = NULL,
       lease_expires_at = now() + $3 * interval '1 millisecond'
     WHERE id = $1 AND lease = $2 AND status = 'RUNNING' RETURNING 1 AS ok`,
    [runId, lease, requeueAfterMs],
  );
  return rows.length > 0;
}

/**
 * Extends the leases of the runs an executor still holds (runIds): a run
 * it dropped keeps its lease lapsing. One round trip for all of them.
 */
export async function renewLeases(sql: Sql, executorId: string, runIds: readonly string[], leaseMs: number): Promise<number> {
  // A run locked by another statement (it is being completed or
  // suspended) is skipped rather than waited for: renewing it is moot,
  // and waiting could deadlock with a statement locking in another order.
  const rows = await sql.query(
    `UPDATE runs SET lease_expires_at = now() + $3 * interval '1 millisecond'
     WHERE id IN (
       SELECT id FROM runs WHERE executor_id = $1 AND status = 'RUNNING' AND id = ANY($2::uuid[])
       ORDER BY id FOR UPDATE SKIP LOCKED)
     RETURNING 1 AS ok`,
    [executorId, runIds, leaseMs],
  );
  return rows.length;
}

/**
 * Confirms that the work of QUEUED runs is on the bus: the reconciler
 * leaves them alone until the long backstop. Only for the lease they had
 * when published: a run claimed and handed back since keeps its short
 * deadline. One round trip for all of them.
 */
export async function markPublished(sql: Sql, runs: readonly PublishedRun[], backstopMs = DEFAULT_QUEUED_BACKSTOP_MS): Promise<void> {
  if (runs.length === 0) return;
  // A run locked by another statement is skipped, not waited for: it is
  // being claimed (then the deadline is moot), and waiting deadlocked with
  // claims of the same runs (each waiting a second for Postgres to notice,
  // which stalled the wake-ups of W4). A skipped run keeps its short
  // deadline: at worst the reconciler publishes its work once more.
  await sql.query(
    `UPDATE runs r SET lease_expires_at = now() + $3 * interval '1 millisecond'
     FROM unnest($1::uuid[], $2::int[]) AS p(id, lease)
     WHERE r.id = p.id AND r.lease = p.lease AND r.id IN (
       SELECT id FROM runs WHERE id = ANY($1::uuid[]) AND status = 'QUEUED' ORDER BY id FOR UPDATE SKIP LOCKED)`,
    [runs.map((r) => r.runId), runs.map((r) => r.lease), backstopMs],
  );
}

/**
 * The reconciler's sweep: runs whose executor stopped renewing its lease,
 * and QUEUED runs whose work was not confirmed published by their
 * deadline, go back to QUEUED with a new deadline and are returned so
 * their work is published again (then markPublished). Runs waiting for a
 * worker with their work on the bus carry no deadline and are left alone,
 * however long they wait. Several schedulers share the sweep without
 * overlap (SKIP LOCKED).
 */
export async function reclaimStale(sql: Sql, limit: number, requeueAfterMs: number): Promise<PublishedRunRef[]> {
  const rows = await sql.query<{ id: string; app_id: string; function_id: string; lease: number }>(
    `UPDATE runs SET status = 'QUEUED', executor_id = NULL,
       lease_expires_at = now() + $2 * interval '1 millisecond'
     WHERE id IN (
       SELECT id FROM runs
       WHERE status IN ('QUEUED', 'RUNNING') AND lease_expires_at < now()
       ORDER BY lease_expires_at LIMIT $1 FOR UPDATE SKIP LOCKED)
     RETURNING id, app_id, function_id, lease`,
    [limit, requeueAfterMs],
  );
  return rows.map((r) => ({ runId: r.id, appId: r.app_id, functionId: r.function_id, lease: Number(r.lease) }));
}

/**
 * Makes every unfinished run due for the reconciler at once. For the
 * embedded engine after a restart: its in-process bus lost the work
 * messages and its previous process held no lease any more.
 */
export async function expireUnfinished(sql: Sql): Promise<void> {
  await sql.query(
    `UPDATE runs SET lease_expires_at = now() - interval '1 millisecond'
     WHERE status IN ('QUEUED', 'RUNNING')`,
  );
}

/**
 * Makes every QUEUED run due for the reconciler at once, which publishes
 * its work again: for a work stream made anew (NATS lost the old one with
 * its messages). RUNNING runs are left to their leases.
 */
export async function expireQueued(sql: Sql): Promise<number> {
  const rows = await sql.query(
    `UPDATE runs SET lease_expires_at = now() - interval '1 millisecond'
     WHERE status = 'QUEUED' AND lease_expires_at >= now() RETURNING 1 AS ok`,
  );
  return rows.length;
}

/** A claimed run row as claimRuns returns it. */
type ClaimRow = {
  id: string;
  app_id: string;
  function_id: string;
  lease: number;
  event_id: string;
  event_name: string;
  event_data: string;
  event_ts_ms: string | number;
  created_at_ms: string | number;
  started_at_ms: string | number;
  event_runs: number;
  journal: Array<{ k: string; o: string | null; e: StoredError | null }> | string;
  attempts: Record<string, { n: number; r: number }> | string;
  wakes: number;
  derived: boolean;
  events: Array<{ id: string; n: string; d: string; t: number }> | string | null;
  trace_parent: string | null;
};

function toClaimedRun(r: ClaimRow): ClaimedRun {
  const journal = typeof r.journal === "string" ? (JSON.parse(r.journal) as typeof r.journal) : r.journal;
  const attempts = (typeof r.attempts === "string" ? JSON.parse(r.attempts) : r.attempts) as Record<string, { n: number; r: number }>;
  const stepAttempts: Record<string, number> = {};
  const retryAtMs: Record<string, number> = {};
  for (const [key, a] of Object.entries(attempts)) {
    if (key !== "") stepAttempts[key] = Number(a.n);
    retryAtMs[key] = Math.floor(Number(a.r));
  }
  const handlerFailures = attempts[""]?.n;
  return {
    runId: r.id,
    appId: r.app_id,
    functionId: r.function_id,
    lease: Number(r.lease),
    // Whole milliseconds: a database time has microseconds, a protobuf Timestamp integral nanos.
    event: { id: r.event_id, name: r.event_name, dataJson: r.event_data, tsMs: Math.floor(Number(r.event_ts_ms)) },
    journal: (journal as Array<{ k: string; o: string | null; e: StoredError | null }>).map((j) =>
      j.e ? { stepKey: j.k, error: j.e } : { stepKey: j.k, outputJson: j.o ?? "null" },
    ),
    attempt: Number(handlerFailures ?? 0) + 1,
    stepAttempts,
    retryAtMs,
    wakes: Number(r.wakes),
    createdAtMs: Number(r.created_at_ms),
    startedAtMs: Number(r.started_at_ms),
    eventRuns: Number(r.event_runs),
    derived: r.derived === true,
    ...(r.events !== null ? { events: windowEvents(r.events) } : {}),
    ...(r.trace_parent !== null ? { traceParent: r.trace_parent } : {}),
  };
}

/** The events of a run made of an event window, as the claim returns them. */
function windowEvents(events: NonNullable<ClaimRow["events"]>): NonNullable<ClaimedRun["events"]> {
  const list = typeof events === "string" ? (JSON.parse(events) as Exclude<typeof events, string>) : events;
  return list.map((e) => ({ id: e.id, name: e.n, dataJson: e.d, tsMs: Math.floor(Number(e.t)) }));
}
