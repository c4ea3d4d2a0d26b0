import type pg from "pg";

/**
 * Checks in Postgres, outside the measured window, what the client verified
 * through the API: every run is COMPLETED, no step key is journaled twice,
 * and, when given, each run journaled exactly stepsPerRun steps. Returns the
 * problems found.
 */
export async function checkJournal(pool: pg.Pool, runIds: readonly string[], stepsPerRun: number | undefined): Promise<string[]> {
  if (runIds.length === 0) return [];
  const problems: string[] = [];
  const runs = await pool.query<{ completed: string }>(
    "SELECT count(*) FILTER (WHERE status = 'COMPLETED') AS completed FROM runs WHERE id = ANY($1::uuid[])",
    [runIds],
  );
  const completed = Number(runs.rows[0]?.completed ?? 0);
  if (completed !== runIds.length) problems.push(`journal: ${completed} of ${runIds.length} runs are COMPLETED`);
  const steps = await pool.query<{ rows: string; keys: string }>(
    "SELECT count(*) AS rows, count(DISTINCT (run_id, step_key)) AS keys FROM steps WHERE run_id = ANY($1::uuid[])",
    [runIds],
  );
  const rows = Number(steps.rows[0]?.rows ?? 0);
  const keys = Number(steps.rows[0]?.keys ?? 0);
  if (rows !== keys) problems.push(`journal: ${rows - keys} step keys are journaled more than once`);
  if (stepsPerRun !== undefined && rows !== runIds.length * stepsPerRun) {
    problems.push(`journal: ${rows} steps, expected ${runIds.length * stepsPerRun} (${stepsPerRun} per run)`);
  }
  return problems;
}
