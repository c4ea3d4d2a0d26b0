// What the checks read from the journal in Postgres (the services'
// schema: runs, steps, events), once every run has ended or the wait for
// them gave up.
import type pg from "pg";

/** A run, with the n of its event. */
export interface RunRow {
  id: string;
  eventId: string;
  status: string;
  /** The n in its event's data; undefined when its event is not in the events table. */
  n: number | undefined;
  createdAt: number;
  endedAt: number | undefined;
  output: unknown;
  error: unknown;
  /** Executions of the run (its lease count). */
  executions: number;
}

/** A journaled step. */
export interface StepRow {
  runId: string;
  stepKey: string;
  output: unknown;
  /** When the journal committed it (the database's clock, ms since the epoch). */
  journaledAt: number;
}

export interface JournalData {
  runs: RunRow[];
  /** Steps of each run, in journal order. */
  steps: Map<string, StepRow[]>;
  /** Rows of the events table. */
  events: number;
  /** (run_id, step_key) pairs with more than one row. */
  keysJournaledTwice: Array<{ runId: string; stepKey: string; rows: number }>;
}

const ms = (d: Date | null): number | undefined => (d === null ? undefined : d.getTime());

export async function readJournal(pool: pg.Pool): Promise<JournalData> {
  const runs = await pool.query<{
    id: string;
    event_id: string;
    status: string;
    n: string | null;
    created_at: Date;
    ended_at: Date | null;
    output: unknown;
    error: unknown;
    lease: number;
  }>(
    `SELECT r.id, r.event_id, r.status, e.data->>'n' AS n, r.created_at, r.ended_at, r.output, r.error, r.lease
     FROM runs r LEFT JOIN events e ON e.id = r.event_id`,
  );
  const steps = await pool.query<{ run_id: string; step_key: string; output: unknown; journaled_at: Date }>(
    "SELECT run_id, step_key, output, journaled_at FROM steps ORDER BY journaled_at, seq",
  );
  const twice = await pool.query<{ run_id: string; step_key: string; rows: string }>(
    "SELECT run_id, step_key, count(*) AS rows FROM steps GROUP BY run_id, step_key HAVING count(*) > 1",
  );
  const events = await pool.query<{ n: string }>("SELECT count(*) AS n FROM events");
  const byRun = new Map<string, StepRow[]>();
  for (const s of steps.rows) {
    const list = byRun.get(s.run_id) ?? [];
    list.push({ runId: s.run_id, stepKey: s.step_key, output: s.output, journaledAt: s.journaled_at.getTime() });
    byRun.set(s.run_id, list);
  }
  return {
    runs: runs.rows.map((r) => ({
      id: r.id,
      eventId: r.event_id,
      status: r.status,
      n: r.n === null ? undefined : Number(r.n),
      createdAt: r.created_at.getTime(),
      endedAt: ms(r.ended_at),
      output: r.output,
      error: r.error,
      executions: Number(r.lease),
    })),
    steps: byRun,
    events: Number(events.rows[0]?.n ?? 0),
    keysJournaledTwice: twice.rows.map((r) => ({ runId: r.run_id, stepKey: r.step_key, rows: Number(r.rows) })),
  };
}
