import type { AwaitView, RunFilter, RunStatus, RunView, StepView, StoredError } from "./types.js";
import { isUuid } from "./types.js";
import type { Sql } from "./sql.js";

// The read side of the journal: what RunService shows of runs.

/** The columns toRunView reads, from runs `r` joined with their events `e`. */
const RUN_COLUMNS = "r.*, r.output IS NOT NULL AS has_output, e.name AS event_name, e.data AS event_data, e.ts AS event_ts";

/**
 * Reads a run with its event, journal, failed attempts, the run that
 * invoked it and, when it is WAITING, what it waits for; null when
 * unknown. Three round trips, four for a WAITING run.
 */
export async function readRun(sql: Sql, runId: string): Promise<RunView | null> {
  if (!isUuid(runId)) return null;
  const runs = await sql.query(
    `SELECT ${RUN_COLUMNS},
       ARRAY(SELECT d.id::text FROM runs d WHERE d.origin_run_id = r.id ORDER BY d.created_at, d.id) AS derived,
       i.parent_run_id::text AS invoked_by, i.step_key AS invoked_by_step
     FROM runs r JOIN events e ON e.id = r.event_id LEFT JOIN invocations i ON i.child_run_id = r.id
     WHERE r.id = $1`,
    [runId],
  );
  const r = runs[0];
  if (!r) return null;
  const steps = await sql.query(
    `SELECT s.step_key, s.step_id, s.attempt, s.started_at, s.ended_at, s.output, s.output IS NOT NULL AS has_output, s.error,
       s.journaled_at, s.kind, i.child_run_id::text AS invoked
     FROM steps s LEFT JOIN invocations i ON s.kind = 'invoke' AND i.parent_run_id = s.run_id AND i.step_key = s.step_key
     WHERE s.run_id = $1 ORDER BY s.seq`,
    [runId],
  );
  const attempts = await sql.query(
    `SELECT step_key, step_id, attempt, started_at, ended_at, error, retry_at
     FROM step_attempts WHERE run_id = $1 ORDER BY ended_at, step_key, attempt`,
    [runId],
  );
  const awaits = r["status"] === "WAITING" ? await readAwaits(sql, runId) : [];
  return {
    ...toRunView(r),
    derivedRunIds: (r["derived"] as string[] | null) ?? [],
    invokedBy: r["invoked_by"] ? { runId: r["invoked_by"] as string, stepKey: r["invoked_by_step"] as string } : null,
    awaits,
    failedAttempts: attempts.map((a) => ({
      key: a["step_key"] as string,
      id: a["step_id"] as string,
      attempt: Number(a["attempt"]),
      startedAt: (a["started_at"] as Date | null) ?? null,
      endedAt: (a["ended_at"] as Date | null) ?? null,
      error: a["error"] as StoredError,
      retryAt: a["retry_at"] as Date,
    })),
    steps: steps.map((s) => ({
      key: s["step_key"] as string,
      id: s["step_id"] as string,
      attempt: Number(s["attempt"]),
      startedAt: (s["started_at"] as Date | null) ?? null,
      endedAt: (s["ended_at"] as Date | null) ?? null,
      output: s["output"],
      hasOutput: s["has_output"] === true,
      error: (s["error"] as StoredError | null) ?? null,
      journaledAt: s["journaled_at"] as Date,
      kind: (s["kind"] as StepView["kind"]) ?? null,
      invokedRunId: (s["invoked"] as string | null) ?? null,
    })),
  };
}

/**
 * What a WAITING run waits for, by step key: its timers (sleeps, retries,
 * timeouts), its waits for events, and the runs it invoked whose steps are
 * not journaled (an invoke without a timeout has no timer). One round trip.
 */
async function readAwaits(sql: Sql, runId: string): Promise<AwaitView[]> {
  const rows = await sql.query<{
    step_key: string;
    step_id: string;
    kind: AwaitView["kind"];
    due_at: Date | null;
    event_name: string | null;
    condition: string | null;
    since: Date | null;
    invoked: string | null;
  }>(
    `SELECT coalesce(t.step_key, w.step_key) AS step_key, coalesce(t.step_id, w.step_id) AS step_id,
       CASE WHEN w.step_key IS NOT NULL THEN 'wait' ELSE t.kind END AS kind, t.due_at,
       w.event_name, w.condition, w.since, i.child_run_id::text AS invoked
     FROM (SELECT * FROM timers WHERE run_id = $1) t
     FULL JOIN (SELECT * FROM waits WHERE run_id = $1) w ON w.step_key = t.step_key
     LEFT JOIN invocations i ON i.parent_run_id = $1 AND i.step_key = coalesce(t.step_key, w.step_key)
     UNION ALL
     SELECT i.step_key, i.step_id, 'invoke', NULL, NULL, NULL, NULL, i.child_run_id::text
     FROM invocations i
     WHERE i.parent_run_id = $1
       AND NOT EXISTS (SELECT 1 FROM timers t WHERE t.run_id = $1 AND t.step_key = i.step_key)
       AND NOT EXISTS (SELECT 1 FROM steps s WHERE s.run_id = $1 AND s.step_key = i.step_key)
     ORDER BY 1`,
    [runId],
  );
  return rows.map((a) => ({
    key: a.step_key,
    id: a.step_id,
    kind: a.kind,
    dueAt: a.due_at,
    ...(a.event_name !== null ? { eventName: a.event_name, condition: a.condition, ...(a.since ? { since: a.since } : {}) } : {}),
    ...(a.invoked !== null ? { invokedRunId: a.invoked } : {}),
  }));
}

/** Lists runs newest first, without steps. One round trip. */
export async function listRuns(sql: Sql, filter: RunFilter): Promise<RunView[]> {
  const where: string[] = [];
  const params: unknown[] = [];
  const add = (cond: string, value: unknown) => {
    params.push(value);
    where.push(cond.replace("?", `$${params.length}`));
  };
  if (filter.appId) add("r.app_id = ?", filter.appId);
  if (filter.functionId) add("r.function_id = ?", filter.functionId);
  if (filter.status) add("r.status = ?", filter.status);
  if (filter.eventId) add("r.event_id = ?", filter.eventId);
  if (filter.createdAfter) add("r.created_at >= ?", filter.createdAfter);
  if (filter.createdBefore) add("r.created_at < ?", filter.createdBefore);
  if (filter.before) {
    params.push(filter.before.createdAt, filter.before.id);
    where.push(`(r.created_at, r.id) < ($${params.length - 1}, $${params.length}::uuid)`);
  }
  params.push(filter.limit);
  const rows = await sql.query(
    `SELECT ${RUN_COLUMNS}
     FROM runs r JOIN events e ON e.id = r.event_id
     ${where.length ? `WHERE ${where.join(" AND ")}` : ""}
     ORDER BY r.created_at DESC, r.id DESC LIMIT $${params.length}`,
    params,
  );
  return rows.map((r) => ({ ...toRunView(r), steps: [], failedAttempts: [] }));
}

/** The runs of several events, without steps, in one round trip. */
export async function listRunsOfEvents(sql: Sql, eventIds: readonly string[]): Promise<RunView[]> {
  if (eventIds.length === 0) return [];
  const rows = await sql.query(
    // Driven by the ids, each looked up by index on both tables: with the
    // events table on the outer side, a plan made while it was small (a
    // fresh install) would scan it whole on every call as it grows.
    `SELECT ${RUN_COLUMNS}
     FROM unnest($1::text[]) AS q(event_id)
     CROSS JOIN LATERAL (SELECT * FROM events WHERE id = q.event_id OFFSET 0) e
     CROSS JOIN LATERAL (SELECT * FROM runs WHERE event_id = q.event_id OFFSET 0) r
     ORDER BY r.created_at, r.id`,
    [eventIds],
  );
  return rows.map((r) => ({ ...toRunView(r), steps: [], failedAttempts: [] }));
}

function toRunView(r: Record<string, unknown>): Omit<RunView, "steps" | "failedAttempts"> {
  return {
    id: r["id"] as string,
    appId: r["app_id"] as string,
    functionId: r["function_id"] as string,
    status: r["status"] as RunStatus,
    lease: Number(r["lease"]),
    createdAt: r["created_at"] as Date,
    startedAt: (r["started_at"] as Date | null) ?? null,
    endedAt: (r["ended_at"] as Date | null) ?? null,
    output: r["output"],
    hasOutput: r["has_output"] === true,
    error: (r["error"] as StoredError | null) ?? null,
    event: {
      id: r["event_id"] as string,
      name: r["event_name"] as string,
      data: r["event_data"],
      ts: r["event_ts"] as Date,
    },
    originRunId: (r["origin_run_id"] as string | null) ?? null,
    originStepKey: (r["origin_step_key"] as string | null) ?? null,
    derivedRunIds: [],
  };
}

/**
 * Of the given event ids, those that started at least one run and whose
 * runs all ended (COMPLETED, FAILED or CANCELLED). One round trip.
 */
export async function endedEvents(sql: Sql, eventIds: readonly string[]): Promise<string[]> {
  if (eventIds.length === 0) return [];
  const rows = await sql.query<{ event_id: string }>(
    `SELECT event_id FROM runs WHERE event_id = ANY($1::text[])
     GROUP BY event_id HAVING bool_and(status IN ('COMPLETED', 'FAILED', 'CANCELLED', 'SKIPPED'))`,
    [eventIds],
  );
  return rows.map((r) => r.event_id);
}

/** Counts stored events with an id; used by tests and tools. */
export async function hasEvent(sql: Sql, eventId: string): Promise<boolean> {
  const rows = await sql.query("SELECT 1 AS ok FROM events WHERE id = $1", [eventId]);
  return rows.length > 0;
}
/** Which runs a bulk cancel or rerun selects: those of one function, by status and creation time. */
export interface RunSelection {
  appId: string;
  functionId: string;
  /** The statuses selected. */
  statuses: readonly RunStatus[];
  createdAfter?: Date | undefined;
  createdBefore?: Date | undefined;
}

/** A run a bulk cancel or rerun selects, with its event for a condition to test. */
export interface SelectedRun {
  runId: string;
  event: { id: string; name: string; dataJson: string; tsMs: number };
}

/** A page of the runs a filter selects, in id order after `afterId`. One round trip. */
export async function selectRuns(sql: Sql, filter: RunSelection, afterId: string | undefined, limit: number): Promise<SelectedRun[]> {
  const rows = await sql.query<{ id: string; event_id: string; name: string; data: string; ts_ms: number | string }>(
    `SELECT r.id::text AS id, e.id AS event_id, e.name, e.data::text AS data, (extract(epoch FROM e.ts) * 1000)::float8 AS ts_ms
     FROM runs r JOIN events e ON e.id = r.event_id
     WHERE r.app_id = $1 AND r.function_id = $2 AND r.status = ANY($3::text[])
       AND ($4::timestamptz IS NULL OR r.created_at >= $4) AND ($5::timestamptz IS NULL OR r.created_at < $5)
       AND ($6::uuid IS NULL OR r.id > $6)
     ORDER BY r.id LIMIT $7`,
    [filter.appId, filter.functionId, filter.statuses, filter.createdAfter ?? null, filter.createdBefore ?? null, afterId ?? null, limit],
  );
  return rows.map((r) => ({ runId: r.id, event: { id: r.event_id, name: r.name, dataJson: r.data, tsMs: Math.floor(Number(r.ts_ms)) } }));
}
