import type { Sql } from "./sql.js";
import type { RunStatus } from "./types.js";

// How many runs each function has in each status: the counts ListFunctions
// adds for the dashboard.

/** The runs of one function in one status. */
export interface RunCount {
  appId: string;
  functionId: string;
  status: RunStatus;
  count: number;
}

/**
 * Counts the runs created at or after `since`, by function and status. One
 * round trip, reading every such run (by index on created_at): its cost
 * grows with the runs in the span.
 */
export async function countRuns(sql: Sql, since: Date, appId: string | undefined): Promise<RunCount[]> {
  const rows = await sql.query<{ app_id: string; function_id: string; status: RunStatus; n: string | number }>(
    `SELECT app_id, function_id, status, count(*) AS n FROM runs
     WHERE created_at >= $1 AND ($2::text IS NULL OR app_id = $2)
     GROUP BY app_id, function_id, status`,
    [since, appId ?? null],
  );
  return rows.map((r) => ({ appId: r.app_id, functionId: r.function_id, status: r.status, count: Number(r.n) }));
}
