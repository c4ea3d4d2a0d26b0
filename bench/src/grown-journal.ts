import { randomBytes } from "node:crypto";
import type pg from "pg";

/** What growJournal loaded, and how long it took. */
export interface GrownJournal {
  runs: number;
  steps: number;
  seconds: number;
}

/**
 * Fills the journal with `runs` ended runs, as if the engine had run them:
 * copies of one ended run (its event, its run row, its steps), each with an
 * event id and run id of its own and every time moved `g` seconds into the
 * past (run g of the load), so the indexes on times see a long history.
 * Batched INSERT ... SELECT over generate_series, `batch` runs a
 * statement; the columns are read from the catalogue (identity columns left
 * to their default), so the load follows the schema as migrations change
 * it. Ends with ANALYZE, as autovacuum would after such growth.
 */
export async function growJournal(
  pool: pg.Pool,
  template: { runId: string },
  runs: number,
  options: { batch?: number; onProgress?: (loaded: number) => void } = {},
): Promise<GrownJournal> {
  const started = performance.now();
  const batch = options.batch ?? 50_000;
  const tag = `grown-${randomBytes(4).toString("hex")}`;
  const [events, runRows, steps] = await Promise.all([columns(pool, "events"), columns(pool, "runs"), columns(pool, "steps")]);
  const eventId = `'${tag}-' || g`;
  const runId = `md5('${tag}-' || g)::uuid`;
  const copy = (table: string, cols: Column[], overrides: Record<string, string>, where: string) => {
    const names = cols.map((c) => quoteIdent(c.name)).join(", ");
    const values = cols
      .map((c) => overrides[c.name] ?? (c.type === "timestamp with time zone" ? `t.${quoteIdent(c.name)} - g * interval '1 second'` : `t.${quoteIdent(c.name)}`))
      .join(", ");
    return `INSERT INTO ${table} (${names}) SELECT ${values} FROM ${table} t, generate_series($2::int, $3::int) g WHERE ${where}`;
  };
  const insertEvents = copy("events", events, { id: eventId }, "t.id = (SELECT event_id FROM runs WHERE id = $1)");
  const insertRuns = copy("runs", runRows, { id: runId, event_id: eventId }, "t.id = $1");
  const insertSteps = copy("steps", steps, { run_id: runId }, "t.run_id = $1");
  let stepRows = 0;
  for (let from = 0; from < runs; from += batch) {
    const to = Math.min(runs, from + batch) - 1;
    const args = [template.runId, from, to];
    await pool.query(insertEvents, args);
    const made = await pool.query(insertRuns, args);
    if (made.rowCount !== to - from + 1) throw new Error(`growing the journal: made ${made.rowCount} runs of ${to - from + 1}`);
    stepRows += (await pool.query(insertSteps, args)).rowCount ?? 0;
    options.onProgress?.(to + 1);
  }
  await pool.query("ANALYZE events, runs, steps");
  return { runs, steps: stepRows, seconds: (performance.now() - started) / 1000 };
}

interface Column {
  name: string;
  type: string;
}

/** The columns of a table of the pool's schema that an INSERT may set (not identity or generated ones). */
async function columns(pool: pg.Pool, table: string): Promise<Column[]> {
  const { rows } = await pool.query<{ name: string; type: string }>(
    `SELECT column_name AS name, data_type AS type FROM information_schema.columns
      WHERE table_schema = current_schema() AND table_name = $1 AND is_identity = 'NO' AND is_generated = 'NEVER'
      ORDER BY ordinal_position`,
    [table],
  );
  if (rows.length === 0) throw new Error(`growing the journal: no table ${table} in the schema`);
  return rows;
}

function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}
