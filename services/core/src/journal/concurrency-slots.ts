import { CANCEL_OUTCOME_COLUMNS, CANCEL_TAIL, type CancelOutcome, cancelOutcome, type CancelOutcomeRow } from "./run-ends.js";
import type { Sql } from "./sql.js";
import type { PublishedRunRef } from "./types.js";

// Flow control that decides when a run starts: concurrency limits (at
// most `limit` runs of a key hold a worker slot at once, across every
// executor), throttles (at most `limit` first starts per period per key)
// and priorities (a run's place in the queue). A run of such a
// function is created 'unkeyed' (the trigger arm_runs), a scheduler computes
// its keys from its event (keyRuns) and it waits; a scheduler grants it a
// slot when its keys have room (grantSlots, under each key's row lock) and
// publishes its work; only a run granted a slot can be claimed; the trigger
// move_run_slot gives the slot back when the run stops running (WAITING or
// ended) and makes a woken run wait again. Every change of a run's slot
// notifies the schedulers on slotChannel. Migration 7 holds the schema.

/** A run whose keys are to be computed, with its event and its function's limits. */
export interface UnkeyedRun {
  runId: string;
  appId: string;
  functionId: string;
  event: { id: string; name: string; dataJson: string; tsMs: number };
  /** The flow control declared by the run's function. */
  flow: FlowControl;
  /** When the run was created, ms since the epoch. */
  createdAtMs: number;
  /** Admission let it start already (it is to be keyed only). */
  admitted: boolean;
}

/** A function's flow control as registered (function_run_rules). */
export interface FlowControl {
  concurrency: ConcurrencyLimit[];
  throttle: ThrottleRule | null;
  /** CEL over `event` giving seconds of advance in the queue, -600 to 600. */
  priority: string | null;
  /** What decides whether a run starts at all. */
  admission: Admission | null;
}

/** A function's rules of whether a run starts at all. */
export interface Admission {
  /** CEL over `event`: one run per value per 24 hours. */
  idempotency?: string | undefined;
  /** At most `limit` runs per `periodMs` window per key; the rest are skipped. */
  rateLimit?: { limit: number; periodMs: number; key: string } | undefined;
  /** At most one run of a key that has not ended: a new one is skipped, or the old ones cancelled. */
  singleton?: { key: string; mode: "skip" | "cancel" } | undefined;
}

/** The keys of a run that admission decides on (admitRuns). */
export interface AdmissionKeys {
  runId: string;
  idempotencyKey?: string | undefined;
  rateKey?: { key: string; limit: number; periodMs: number } | undefined;
  singletonKey?: { key: string; mode: "skip" | "cancel" } | undefined;
}

/** What admitRuns decided for a run. */
export type AdmissionOutcome =
  | { runId: string; kind: "admitted"; toCancel: string[] }
  | { runId: string; kind: "skipped"; reason: string; eventId: string; appId: string; functionId: string };

/** At most `limit` first starts per `periodMs` per key, `burst` more at once. */
export interface ThrottleRule {
  limit: number;
  periodMs: number;
  burst: number;
  /** CEL over `event`; "" for one key for the function. */
  key: string;
}

/** What the slot keeper computed for a run. */
export interface RunKeys {
  runId: string;
  /** Its concurrency keys, one per limit (none: it takes no slot). */
  keys: readonly string[];
  /** Its throttle key, when its function has a throttle. */
  throttleKey?: string | undefined;
  /** Its place in the queue: creation time moved earlier by its priority. */
  queuedAtMs: number;
}

/** A concurrency limit as registered. */
export interface ConcurrencyLimit {
  limit: number;
  /** CEL over `event`; "" for one key for the whole scope. */
  key: string;
  scope: "function" | "app";
}

/** The channel that slot changes of this database's schema are notified on. One round trip. */
export async function slotChannel(sql: Sql): Promise<string> {
  const rows = await sql.query<{ channel: string }>("SELECT slot_channel() AS channel");
  return rows[0]?.channel ?? "stepwise_slots";
}

/** Up to `limit` runs waiting for their keys, oldest first. One round trip. */
export async function unkeyedRuns(sql: Sql, limit: number): Promise<UnkeyedRun[]> {
  const rows = await sql.query<{
    id: string;
    app_id: string;
    function_id: string;
    e_id: string;
    e_name: string;
    e_data: string;
    e_ts: number | string;
    concurrency: ConcurrencyLimit[] | string | null;
    throttle: ThrottleRule | string | null;
    priority: string | null;
    admission: Admission | string | null;
    created_ms: number | string;
    slot: string;
  }>(
    `SELECT r.id, r.app_id, r.function_id, e.id AS e_id, e.name AS e_name, e.data::text AS e_data,
       (extract(epoch FROM e.ts) * 1000)::float8 AS e_ts, f.concurrency, f.throttle, f.priority, f.admission,
       (extract(epoch FROM r.created_at) * 1000)::float8 AS created_ms, r.slot
     FROM (SELECT * FROM runs WHERE slot IN ('unkeyed', 'admitted') ORDER BY created_at LIMIT $1) r
     JOIN events e ON e.id = r.event_id
     LEFT JOIN function_run_rules f ON f.app_id = r.app_id AND f.function_id = r.function_id`,
    [limit],
  );
  return rows.map((r) => ({
    runId: r.id,
    appId: r.app_id,
    functionId: r.function_id,
    event: { id: r.e_id, name: r.e_name, dataJson: r.e_data, tsMs: Number(r.e_ts) },
    flow: {
      concurrency: (typeof r.concurrency === "string" ? JSON.parse(r.concurrency) : (r.concurrency ?? [])) as ConcurrencyLimit[],
      throttle: (typeof r.throttle === "string" ? JSON.parse(r.throttle) : r.throttle) as ThrottleRule | null,
      priority: r.priority,
      admission: (typeof r.admission === "string" ? JSON.parse(r.admission) : r.admission) as Admission | null,
    },
    createdAtMs: Number(r.created_ms),
    admitted: r.slot === "admitted",
  }));
}

/**
 * Stores what the slot keeper computed for unkeyed runs, the limit of each
 * concurrency key and the rate of each throttle key, and makes the runs
 * wait for a slot. A run with no key and no throttle (one admission let
 * start) goes on as a run without flow control: it is returned, with a
 * publish deadline of `deadlineMs`, for its work to be published. A run
 * keyed meanwhile by another scheduler keeps its keys. One round trip.
 */
export async function keyRuns(
  sql: Sql,
  runs: readonly RunKeys[],
  limits: ReadonlyMap<string, number>,
  throttles: ReadonlyMap<string, { emissionMs: number; toleranceMs: number }>,
  deadlineMs = 60_000,
): Promise<PublishedRunRef[]> {
  if (runs.length === 0) return [];
  const rows = await sql.query<{ id: string; app_id: string; function_id: string; lease: number; slot: string | null }>(
    `WITH lims AS (
       SELECT * FROM jsonb_to_recordset($2::jsonb) AS l(key text, lim int) ORDER BY key
     ), up AS (
       INSERT INTO concurrency_keys (key, lim) SELECT key, lim FROM lims
       ON CONFLICT (key) DO UPDATE SET lim = excluded.lim WHERE concurrency_keys.lim <> excluded.lim
     ), rates AS (
       SELECT * FROM jsonb_to_recordset($3::jsonb) AS t(key text, e float8, tol float8) ORDER BY key
     ), tup AS (
       INSERT INTO throttle_keys (key, emission_ms, tolerance_ms) SELECT key, e, tol FROM rates
       ON CONFLICT (key) DO UPDATE SET emission_ms = excluded.emission_ms, tolerance_ms = excluded.tolerance_ms
         WHERE throttle_keys.emission_ms <> excluded.emission_ms OR throttle_keys.tolerance_ms <> excluded.tolerance_ms
     )
     UPDATE runs SET ckey1 = x.k1, ckey2 = x.k2, tkey = x.t, queued_at = to_timestamp(x.q / 1000.0),
       slot = CASE WHEN x.k1 IS NULL AND x.t IS NULL THEN NULL ELSE 'waiting' END,
       lease_expires_at = CASE WHEN x.k1 IS NULL AND x.t IS NULL THEN now() + $4 * interval '1 millisecond' ELSE lease_expires_at END
     FROM jsonb_to_recordset($1::jsonb) AS x(id uuid, k1 text, k2 text, t text, q float8)
     WHERE runs.id = x.id AND runs.slot IN ('unkeyed', 'admitted')
     RETURNING runs.id, runs.app_id, runs.function_id, runs.lease, runs.slot`,
    [
      JSON.stringify(runs.map((r) => ({ id: r.runId, k1: r.keys[0] ?? null, k2: r.keys[1] ?? null, t: r.throttleKey ?? null, q: r.queuedAtMs }))),
      JSON.stringify([...limits].map(([key, lim]) => ({ key, lim }))),
      JSON.stringify([...throttles].map(([key, t]) => ({ key, e: t.emissionMs, tol: t.toleranceMs }))),
      deadlineMs,
    ],
  );
  return rows
    .filter((r) => r.slot === null)
    .map((r) => ({ runId: r.id, appId: r.app_id, functionId: r.function_id, lease: Number(r.lease) }));
}

/**
 * Lets up to `max` waiting runs start, in queue order per key, as their
 * concurrency keys have room and their throttles allow, and returns them
 * QUEUED with a publish deadline of `deadlineMs` (their work is to be
 * published, then markPublished). Schedulers share the keys (SKIP
 * LOCKED); see grant_run_slots in migration 7. One round trip.
 */
export async function grantSlots(sql: Sql, max: number, deadlineMs: number): Promise<SlotGrants> {
  const rows = await sql.query<{
    granted_id: string | null;
    granted_app_id: string;
    granted_function_id: string;
    granted_lease: number;
    retry_in_ms: number | string | null;
  }>("SELECT * FROM grant_run_slots($1, $2)", [max, deadlineMs]);
  const granted: PublishedRunRef[] = [];
  let retryInMs: number | null = null;
  for (const r of rows) {
    if (r.granted_id === null) {
      retryInMs = r.retry_in_ms === null ? null : Number(r.retry_in_ms);
      continue;
    }
    granted.push({ runId: r.granted_id, appId: r.granted_app_id, functionId: r.granted_function_id, lease: Number(r.granted_lease) });
  }
  return { granted, retryInMs };
}

/** What grantSlots did. */
export interface SlotGrants {
  /** The runs let start, whose work is to be published. */
  granted: PublishedRunRef[];
  /** When a throttle next lets a waiting run start; null when no run waits on one. */
  retryInMs: number | null;
}

/**
 * Decides, in the order given, whether unkeyed runs start at all (see
 * admit_runs in migration 7): a run is SKIPPED when its idempotency key was
 * taken in the last 24 hours, its rate limit's window is full, or a run of
 * its singleton key (mode skip) has not ended; otherwise it takes its keys,
 * and for a singleton in mode cancel the runs it replaces are returned and
 * owed their cancel (cancelReplacedSingletons). One round trip.
 */
export async function admitRuns(sql: Sql, runs: readonly AdmissionKeys[]): Promise<AdmissionOutcome[]> {
  if (runs.length === 0) return [];
  const rows = await sql.query<{
    admitted_id: string;
    skipped: boolean;
    reason: string | null;
    event_id: string | null;
    to_cancel: string[] | null;
    app_id: string | null;
    function_id: string | null;
  }>(
    // The function of each run too, in the order admit_runs decided them.
    // The runs a singleton in mode cancel replaces are owed their cancel in
    // the same statement (cancelReplacedSingletons pays it).
    `WITH a AS (
       SELECT * FROM admit_runs($1::jsonb) WITH ORDINALITY AS a(admitted_id, skipped, reason, event_id, to_cancel, n)
     ), owed AS (
       INSERT INTO singleton_replacements (replaced_id, by_run_id)
       SELECT unnest(a.to_cancel), a.admitted_id FROM a WHERE a.to_cancel IS NOT NULL
       ON CONFLICT DO NOTHING
     )
     SELECT a.admitted_id, a.skipped, a.reason, a.event_id, a.to_cancel, r.app_id, r.function_id
     FROM a LEFT JOIN runs r ON r.id = a.admitted_id ORDER BY a.n`,
    [
      JSON.stringify(
        runs.map((r) => ({
          id: r.runId,
          ik: r.idempotencyKey ?? null,
          rk: r.rateKey?.key ?? null,
          rl: r.rateKey?.limit ?? null,
          rp: r.rateKey?.periodMs ?? null,
          sk: r.singletonKey?.key ?? null,
          sm: r.singletonKey?.mode ?? null,
        })),
      ),
    ],
  );
  return rows.map((r): AdmissionOutcome =>
    r.skipped
      ? { runId: r.admitted_id, kind: "skipped", reason: r.reason ?? "", eventId: r.event_id ?? "", appId: r.app_id ?? "", functionId: r.function_id ?? "" }
      : { runId: r.admitted_id, kind: "admitted", toCancel: r.to_cancel ?? [] },
  );
}

/** cancelReplacedSingletons' statement: $1 how many replacements at most. */
const CANCEL_REPLACED_SINGLETONS = `WITH pending AS (
     SELECT replaced_id, by_run_id FROM singleton_replacements ORDER BY replaced_id LIMIT $1 FOR UPDATE SKIP LOCKED
   ), paid AS (
     DELETE FROM singleton_replacements s USING pending p WHERE s.replaced_id = p.replaced_id AND s.by_run_id = p.by_run_id
   ), one AS (
     SELECT replaced_id, min(by_run_id::text) AS by_run_id FROM pending GROUP BY replaced_id
   ), target AS (
     SELECT runs.id, runs.status, runs.executor_id, runs.lease, 'singleton: replaced by run ' || one.by_run_id AS reason, true AS cancel
     FROM runs JOIN one ON one.replaced_id = runs.id ORDER BY runs.id FOR UPDATE OF runs
   ), ${CANCEL_TAIL}
   SELECT ${CANCEL_OUTCOME_COLUMNS}`;

/**
 * Cancels up to `limit` runs that singletons in mode cancel replaced
 * (admitRuns owed them), each with the reason naming the run that
 * replaced it, and clears what it paid, in one statement: a scheduler
 * that dies before leaves them to the next call, of any scheduler (SKIP
 * LOCKED). A run that ended meanwhile is left as it is. Returns the runs
 * cancelled. One round trip.
 */
export async function cancelReplacedSingletons(sql: Sql, limit: number): Promise<Array<{ runId: string; outcome: CancelOutcome }>> {
  const rows = await sql.query<CancelOutcomeRow>(CANCEL_REPLACED_SINGLETONS, [limit]);
  return rows.map((r) => ({ runId: r.run_id, outcome: cancelOutcome(r) }));
}
