import type { QueuedRuns } from "../runtime/metrics.js";
import type { Sql } from "./sql.js";

// How long the queue is, for the scheduler's metrics: read when Prometheus
// scrapes, never on the hot path.

/**
 * The QUEUED runs of every registered function (0 for one with none, so
 * its series stays), and of any other function that has some: how many,
 * and the age of the oldest that never started, from its creation (a run
 * queued again after a sleep or a wait counts in the depth, not here: its
 * creation says nothing of how long it has been queued). One round trip,
 * over the partial index of unfinished runs.
 */
export async function queueDepths(sql: Sql): Promise<QueuedRuns[]> {
  const rows = await sql.query<{ app_id: string; function_id: string; depth: number | string; oldest_s: number | string }>(
    `WITH q AS (
       SELECT app_id, function_id, count(*) AS depth,
         extract(epoch FROM now() - min(created_at) FILTER (WHERE started_at IS NULL)) AS oldest_s
       FROM runs WHERE status = 'QUEUED' GROUP BY app_id, function_id
     )
     SELECT app_id, function_id, coalesce(q.depth, 0)::int AS depth, greatest(coalesce(q.oldest_s, 0), 0)::float8 AS oldest_s
     FROM functions f FULL JOIN q USING (app_id, function_id)
     ORDER BY app_id, function_id`,
  );
  return rows.map((r) => ({ appId: r.app_id, functionId: r.function_id, depth: Number(r.depth), oldestAgeSeconds: Number(r.oldest_s) }));
}
