import type { Sql } from "./sql.js";

// Retention: ended runs and the events no run refers to, deleted once
// older than the configured age, a bounded batch per statement, so a
// journal does not grow forever and the deletion never holds many rows
// (or the hot path) at once. Runs that have not ended are never touched.

/**
 * Deletes up to `limit` runs that ended more than `olderThanMs` ago, with
 * everything kept for them: steps, attempts, what is left of their timers,
 * waits, cancel rules and deadlines, their invocation rows, and the window
 * rows of a debounce or batch run once no run of that window is left.
 * Rows another process is deleting are skipped (SKIP LOCKED), so several
 * schedulers share the work. Returns how many runs it deleted.
 */
export async function deleteEndedRuns(sql: Sql, olderThanMs: number, limit: number): Promise<number> {
  const rows = await sql.query<{ n: number | string }>(
    `WITH r AS (
       SELECT id, window_id FROM runs
       WHERE ended_at IS NOT NULL AND ended_at < now() - $1 * interval '1 millisecond'
       ORDER BY ended_at LIMIT $2
       FOR UPDATE SKIP LOCKED
     ), s AS (DELETE FROM steps WHERE run_id IN (SELECT id FROM r)),
     a AS (DELETE FROM step_attempts WHERE run_id IN (SELECT id FROM r)),
     t AS (DELETE FROM timers WHERE run_id IN (SELECT id FROM r)),
     w AS (DELETE FROM waits WHERE run_id IN (SELECT id FROM r)),
     c AS (DELETE FROM cancel_waits WHERE run_id IN (SELECT id FROM r)),
     d AS (DELETE FROM run_deadlines WHERE run_id IN (SELECT id FROM r)),
     i AS (DELETE FROM invocations WHERE child_run_id IN (SELECT id FROM r) OR parent_run_id IN (SELECT id FROM r)),
     we AS (
       DELETE FROM window_events x
       WHERE x.window_id IN (SELECT window_id FROM r WHERE window_id IS NOT NULL)
         AND NOT EXISTS (SELECT 1 FROM runs o WHERE o.window_id = x.window_id AND o.id NOT IN (SELECT id FROM r))
     ),
     gone AS (DELETE FROM runs WHERE id IN (SELECT id FROM r) RETURNING 1)
     SELECT count(*) AS n FROM gone`,
    [olderThanMs, limit],
  );
  return Number(rows[0]?.n ?? 0);
}

/**
 * Deletes up to `limit` events stored more than `olderThanMs` ago that no
 * run refers to and no window holds: those whose runs retention deleted,
 * and those that started nothing. Returns how many it deleted.
 */
export async function deleteUnreferencedEvents(sql: Sql, olderThanMs: number, limit: number): Promise<number> {
  const rows = await sql.query<{ n: number | string }>(
    `WITH e AS (
       SELECT id FROM events ev
       WHERE stored_at < now() - $1 * interval '1 millisecond'
         AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.event_id = ev.id)
         AND NOT EXISTS (SELECT 1 FROM window_events w WHERE w.event_id = ev.id)
       ORDER BY stored_at LIMIT $2
       FOR UPDATE SKIP LOCKED
     ), gone AS (DELETE FROM events WHERE id IN (SELECT id FROM e) RETURNING 1)
     SELECT count(*) AS n FROM gone`,
    [olderThanMs, limit],
  );
  return Number(rows[0]?.n ?? 0);
}
