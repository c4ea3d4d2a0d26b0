import type { Sql } from "./sql.js";
import type { AttemptRecord, JournalOutcome, StepRecord, StoredError } from "./types.js";

// Where a step result is journaled: first write wins per step key, and only
// for the execution that holds the run's lease. Failed attempts that will
// be retried are journaled beside the steps.

/**
 * Journals a step result if this execution still holds the run (lease and
 * status match) and the step has no result yet. One round trip when it is
 * written, two when it is not.
 *
 * The lease check takes no row lock, on purpose (it would add a row-lock
 * write to every step): an insert whose snapshot predates a takeover may
 * still commit. That execution was presumed dead; the one that took over
 * finds the key journaled (first write wins) and continues with that
 * value, and the stale one is refused at its next step.
 */
export async function journalStep(sql: Sql, s: StepRecord): Promise<JournalOutcome> {
  const written = await sql.query(
    `INSERT INTO steps (run_id, step_key, step_id, attempt, started_at, ended_at, output, error)
     SELECT $1, $2, $3, $4, to_timestamp($5 / 1000.0), to_timestamp($6 / 1000.0), $7::jsonb, $8::jsonb
     WHERE EXISTS (SELECT 1 FROM runs WHERE id = $1 AND lease = $9 AND status = 'RUNNING')
     ON CONFLICT (run_id, step_key) DO NOTHING
     RETURNING seq`,
    [
      s.runId,
      s.stepKey,
      s.stepId,
      s.attempt,
      s.startedAtMs,
      s.endedAtMs,
      s.error ? null : (s.outputJson ?? "null"),
      s.error ? JSON.stringify(s.error) : null,
      s.lease,
    ],
  );
  if (written.length > 0) return { kind: "journaled" };
  return stepOutcome(sql, s);
}

/** Why a step result was not written: the journal's result, or the lease was lost. One round trip. */
async function stepOutcome(sql: Sql, s: StepRecord): Promise<JournalOutcome> {
  const rows = await sql.query<{ held: boolean | null; o: string | null; e: StoredError | null; found: boolean }>(
    `SELECT (SELECT lease = $3 AND status = 'RUNNING' FROM runs WHERE id = $1) AS held,
            s.output::text AS o, s.error AS e, s.run_id IS NOT NULL AS found
     FROM (SELECT 1) one LEFT JOIN steps s ON s.run_id = $1 AND s.step_key = $2`,
    [s.runId, s.stepKey, s.lease],
  );
  const r = rows[0];
  if (!r || !r.held) return { kind: "lease-lost" };
  if (!r.found) return { kind: "lease-lost" };
  return {
    kind: "existing",
    entry: r.e ? { stepKey: s.stepKey, error: r.e } : { stepKey: s.stepKey, outputJson: r.o ?? "null" },
  };
}

/**
 * Journals the step results of many executions in one statement (group
 * commit): each is written if its execution still holds the run and its
 * step has no result yet. Returns the outcome of each, in order; those
 * not written cost one more round trip each to tell "existing" from
 * "lease-lost", which only happens after a takeover. A result Postgres
 * refuses as data fails the whole statement: the caller then journals
 * them one by one.
 */
export async function journalSteps(sql: Sql, records: readonly StepRecord[]): Promise<JournalOutcome[]> {
  if (records.length === 1) return [await journalStep(sql, records[0] as StepRecord)];
  const written = await sql.query<{ run_id: string; step_key: string }>(
    `INSERT INTO steps (run_id, step_key, step_id, attempt, started_at, ended_at, output, error)
     SELECT s.run_id, s.step_key, s.step_id, s.attempt, to_timestamp(s.sa / 1000.0), to_timestamp(s.ea / 1000.0), s.o, s.e
     FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int[], $5::float8[], $6::float8[], $7::jsonb[], $8::jsonb[], $9::int[])
       AS s(run_id, step_key, step_id, attempt, sa, ea, o, e, lease)
     JOIN runs r ON r.id = s.run_id AND r.lease = s.lease AND r.status = 'RUNNING'
     ON CONFLICT (run_id, step_key) DO NOTHING
     RETURNING run_id, step_key`,
    [
      records.map((s) => s.runId),
      records.map((s) => s.stepKey),
      records.map((s) => s.stepId),
      records.map((s) => s.attempt),
      records.map((s) => s.startedAtMs),
      records.map((s) => s.endedAtMs),
      records.map((s) => (s.error ? null : (s.outputJson ?? "null"))),
      records.map((s) => (s.error ? JSON.stringify(s.error) : null)),
      records.map((s) => s.lease),
    ],
  );
  const done = new Set(written.map((w) => `${w.run_id}\u0000${w.step_key}`));
  return Promise.all(
    records.map(async (s): Promise<JournalOutcome> => {
      if (done.has(`${s.runId}\u0000${s.stepKey}`)) return { kind: "journaled" };
      return stepOutcome(sql, s);
    }),
  );
}

/**
 * Journals a failed attempt that will be retried (of a step, or of the
 * handler with stepKey ''), if this execution still holds the run. First
 * write wins per attempt number. False when the lease was lost. One
 * round trip.
 */
export async function journalAttempt(sql: Sql, a: AttemptRecord): Promise<boolean> {
  const rows = await sql.query<{ held: boolean }>(
    `WITH held AS (SELECT 1 FROM runs WHERE id = $1 AND lease = $9 AND status = 'RUNNING'),
     ins AS (
       INSERT INTO step_attempts (run_id, step_key, attempt, step_id, started_at, ended_at, error, retry_at)
       SELECT $1, $2, $3, $4, to_timestamp($5 / 1000.0), to_timestamp($6 / 1000.0), $7::jsonb, to_timestamp($8 / 1000.0)
       FROM held
       ON CONFLICT (run_id, step_key, attempt) DO NOTHING
     )
     SELECT EXISTS (SELECT 1 FROM held) AS held`,
    [a.runId, a.stepKey, a.attempt, a.stepId, a.startedAtMs, a.endedAtMs, JSON.stringify(a.error), a.retryAtMs, a.lease],
  );
  return rows[0]?.held === true;
}
