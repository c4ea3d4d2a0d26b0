import { ENDED_RUN_STATUSES } from "@stepwise/proto";
import type { Sql } from "./sql.js";
import {
  DEFAULT_QUEUED_BACKSTOP_MS,
  type EventInput,
  type EventWindowRule,
  type PublishedRunRef,
  type RecordedEvent,
  type RunStatus,
} from "./types.js";

// Where runs are created: every INSERT INTO runs of the engine is in this
// module. A run is created QUEUED, once per (app, function, event): by an
// event whose trigger matches (recordEventsMatching, createRuns), by a cron
// tick (CRON_TICK_RUNS, in TimerStore.fireCron's statement) and by a failed
// run whose function has an onFailure handler (FAILURE_RUN, in failRun's
// statement), by RerunRun and ReplayRun (deriveRun), and by step.invoke
// (INVOKED_RUNS, in startInvocations' statement), and by an event window
// of debounce or batchEvents once due (WINDOW_RUNS, in closeDueWindows'
// statement in event-windows.ts). The fragments are SQL
// spliced into those statements, so that a run's creation commits with
// what caused it.

/**
 * Stores an event and creates one QUEUED run per function it triggers
 * without a condition; returns those runs. See recordEventMatching.
 */
export async function recordEvent(sql: Sql, ev: EventInput, backstopMs = DEFAULT_QUEUED_BACKSTOP_MS): Promise<PublishedRunRef[]> {
  return (await recordEventMatching(sql, ev, backstopMs)).runs;
}

/**
 * Stores an event and creates one QUEUED run per function it triggers
 * without a condition, idempotently: a second call for the same event id
 * creates nothing and returns the runs that are still QUEUED, so a
 * redelivered event gets its work published again. Until their work is
 * published the event stays unacknowledged, and its redelivery is what
 * re-publishes; the new runs only get the long backstop deadline. The
 * triggers with conditions are returned for the caller to evaluate, then
 * createRuns. One statement, one round trip.
 */
export async function recordEventMatching(sql: Sql, ev: EventInput, backstopMs = DEFAULT_QUEUED_BACKSTOP_MS): Promise<RecordedEvent> {
  return (await recordEventsMatching(sql, [ev], backstopMs))[0] as RecordedEvent;
}

/**
 * recordEventMatching for many events in one statement (group commit of
 * the scheduler's concurrent events); one result per event, in order. One
 * round trip.
 */
export async function recordEventsMatching(sql: Sql, events: readonly EventInput[], backstopMs = DEFAULT_QUEUED_BACKSTOP_MS): Promise<RecordedEvent[]> {
  const rows = await sql.query<{
    kind: string;
    event_id: string;
    id: string | null;
    app_id: string | null;
    function_id: string | null;
    lease: number | null;
    conditions: string[] | null;
    stored_ms: number | string | null;
    gather: EventWindowRule | string | null;
  }>(
    // The lookups of existing rows go by id (LATERAL ... OFFSET 0, a
    // correlated subquery): a join there would let a plan cached while
    // the tables were small (a fresh install) scan them whole as they grow.
    // The events come as one JSON array, not as arrays per column: the
    // planner sizes jsonb_to_recordset the same whatever its argument, so
    // Postgres keeps one generic plan for the statement instead of
    // planning it anew at each execution (it costs about 1 ms here) as it
    // does when unnest's row count follows the array it is given.
    `WITH e AS (
       SELECT DISTINCT ON (id) * FROM jsonb_to_recordset($1::jsonb)
         AS e(id text, name text, data jsonb, ts float8, rcv float8, tp text, app text)
     ), ev AS (
       INSERT INTO events (id, name, data, ts, received_at, app_id)
       SELECT id, name, data, to_timestamp(ts / 1000.0), to_timestamp(rcv / 1000.0), app FROM e
       ON CONFLICT (id) DO NOTHING
       RETURNING id, stored_at
     ), created AS (
       INSERT INTO runs (id, app_id, function_id, event_id, status, lease_expires_at, slot, trace_parent)
       SELECT gen_random_uuid(), t.app_id, t.function_id, e.id, 'QUEUED', now() + $2 * interval '1 millisecond',
         CASE WHEN t.flow THEN 'unkeyed' END, e.tp
       FROM e JOIN function_triggers t ON t.event_name = e.name AND (e.app IS NULL OR t.app_id = e.app) AND t.conditions IS NULL AND NOT t.gather
       ON CONFLICT (app_id, function_id, event_id) WHERE origin_run_id IS NULL DO NOTHING
       RETURNING id, app_id, function_id, event_id, lease, slot
     )
     -- A run with flow control waits for the slot keeper, which publishes its work.
     SELECT 'run' AS kind, event_id, id::text, app_id, function_id, lease, NULL::text[] AS conditions, NULL::float8 AS stored_ms,
       NULL::jsonb AS gather
     FROM created WHERE slot IS NULL
     UNION ALL
     SELECT 'run', r.event_id, r.id::text, r.app_id, r.function_id, r.lease, NULL, NULL, NULL
     FROM e CROSS JOIN LATERAL (
       SELECT * FROM runs WHERE event_id = e.id AND status = 'QUEUED' AND (slot IS NULL OR slot = 'granted') OFFSET 0) r
     UNION ALL
     SELECT 'cond', e.id, NULL, t.app_id, t.function_id, NULL, t.conditions, NULL, NULL
     FROM e JOIN function_triggers t ON t.event_name = e.name AND (e.app IS NULL OR t.app_id = e.app) AND t.conditions IS NOT NULL AND NOT t.gather
     UNION ALL
     -- A function with debounce or batchEvents gathers the event into a window (event-windows.ts).
     SELECT 'gather', e.id, NULL, t.app_id, t.function_id, NULL, t.conditions, NULL,
       (SELECT f.gather FROM function_run_rules f WHERE f.app_id = t.app_id AND f.function_id = t.function_id)
     FROM e JOIN function_triggers t ON t.event_name = e.name AND (e.app IS NULL OR t.app_id = e.app) AND t.gather
     UNION ALL
     SELECT 'stored', e.id, NULL, NULL, NULL, NULL, NULL,
       (extract(epoch FROM coalesce(ev.stored_at, (SELECT old.stored_at FROM events old WHERE old.id = e.id))) * 1000)::float8, NULL
     FROM e LEFT JOIN ev ON ev.id = e.id`,
    [eventsDocument(events), backstopMs],
  );
  const out = new Map<string, RecordedEvent>(events.map((e) => [e.id, { runs: [], conditional: [], gathering: [], storedAtMs: 0 }]));
  for (const r of rows) {
    const rec = out.get(r.event_id);
    if (!rec) continue;
    if (r.kind === "run" && r.id !== null) {
      rec.runs.push({ runId: r.id, appId: r.app_id ?? "", functionId: r.function_id ?? "", lease: Number(r.lease) });
    } else if (r.kind === "cond" && r.conditions) {
      rec.conditional.push({ appId: r.app_id ?? "", functionId: r.function_id ?? "", conditions: r.conditions });
    } else if (r.kind === "gather" && r.gather !== null) {
      const window = (typeof r.gather === "string" ? JSON.parse(r.gather) : r.gather) as EventWindowRule;
      rec.gathering.push({ appId: r.app_id ?? "", functionId: r.function_id ?? "", conditions: r.conditions, window });
    } else if (r.kind === "stored") {
      rec.storedAtMs = Number(r.stored_ms ?? 0);
    }
  }
  // An id sent twice in one batch shares one record; each caller gets its own copy.
  return events.map((e) => {
    const rec = out.get(e.id) as RecordedEvent;
    return { runs: [...rec.runs], conditional: [...rec.conditional], gathering: [...rec.gathering], storedAtMs: rec.storedAtMs };
  });
}

/**
 * Creates QUEUED runs of an event for functions whose trigger conditions
 * held, idempotently; returns the runs created now or still QUEUED. One
 * round trip.
 */
export async function createRuns(
  sql: Sql,
  eventId: string,
  functions: ReadonlyArray<{ appId: string; functionId: string }>,
  backstopMs = DEFAULT_QUEUED_BACKSTOP_MS,
  traceParent?: string,
): Promise<PublishedRunRef[]> {
  if (functions.length === 0) return [];
  const rows = await sql.query<{ id: string; app_id: string; function_id: string; lease: number }>(
    `WITH created AS (
       INSERT INTO runs (id, app_id, function_id, event_id, status, lease_expires_at, trace_parent)
       SELECT gen_random_uuid(), f.app_id, f.function_id, $1, 'QUEUED', now() + $4 * interval '1 millisecond', $5
       FROM unnest($2::text[], $3::text[]) AS f(app_id, function_id)
       ON CONFLICT (app_id, function_id, event_id) WHERE origin_run_id IS NULL DO NOTHING
       RETURNING id, app_id, function_id, lease
     )
     SELECT id, app_id, function_id, lease FROM created
     UNION ALL
     SELECT r.id, r.app_id, r.function_id, r.lease FROM runs r
     JOIN unnest($2::text[], $3::text[]) AS f(app_id, function_id) ON r.app_id = f.app_id AND r.function_id = f.function_id
     WHERE r.event_id = $1 AND r.status = 'QUEUED'`,
    [eventId, functions.map((f) => f.appId), functions.map((f) => f.functionId), backstopMs, traceParent || null],
  );
  return rows.map((r) => ({ runId: r.id, appId: r.app_id, functionId: r.function_id, lease: Number(r.lease) }));
}

/**
 * The tail of failRun's statement that creates the onFailure run of the
 * failed run: given `h` (run_id, app_id, handler, data: the failed run, its
 * function's onFailure handler and the failure event's data), stores the
 * "stepwise/run.failed" event `stepwise-failed-<run id>` and creates the
 * handler's run, QUEUED with a deadline of `deadlineParam` milliseconds
 * (the short one: its work is published next). `created` returns the run.
 */
export function FAILURE_RUN(deadlineParam: string): string {
  return `ev AS (
         INSERT INTO events (id, name, data, ts, received_at)
         SELECT 'stepwise-failed-' || h.run_id, 'stepwise/run.failed', h.data, now(), now() FROM h
         ON CONFLICT (id) DO NOTHING
       ), created AS (
         INSERT INTO runs (id, app_id, function_id, event_id, status, lease_expires_at)
         SELECT gen_random_uuid(), h.app_id, h.handler, 'stepwise-failed-' || h.run_id, 'QUEUED',
           now() + ${deadlineParam} * interval '1 millisecond'
         FROM h
         ON CONFLICT (app_id, function_id, event_id) WHERE origin_run_id IS NULL DO NOTHING
         RETURNING id, app_id, function_id, lease
       )`;
}

/**
 * The last part of TimerStore.fireCron's statement: creates the run of each
 * tick of `x` (a: app, f: function, id: the tick's event id), QUEUED with a
 * deadline of `deadlineParam` milliseconds, and returns them. The tick's
 * event id names the tick, so a tick fired twice creates one run.
 */
export function CRON_TICK_RUNS(deadlineParam: string): string {
  return `INSERT INTO runs (id, app_id, function_id, event_id, status, lease_expires_at)
         SELECT gen_random_uuid(), x.a, x.f, x.id, 'QUEUED', now() + ${deadlineParam} * interval '1 millisecond' FROM x
         ON CONFLICT (app_id, function_id, event_id) WHERE origin_run_id IS NULL DO NOTHING
         RETURNING id, app_id, function_id, lease`;
}

/**
 * The part of startInvocations' statement (invocations.ts) that creates
 * the runs a suspension invokes: one per row of `source` (a: app, f:
 * function, ev: the child's event id), QUEUED with a deadline of
 * `deadlineParam` milliseconds (the short one: its work is published
 * next). `created` returns them (id, app_id, function_id, event_id,
 * lease). The event id names the parent and the step, so a suspension
 * made again creates nothing.
 */
export function INVOKED_RUNS(source: string, deadlineParam: string): string {
  return `created AS (
         INSERT INTO runs (id, app_id, function_id, event_id, status, lease_expires_at)
         SELECT gen_random_uuid(), s.a, s.f, s.ev, 'QUEUED', now() + ${deadlineParam} * interval '1 millisecond'
         FROM ${source} s
         ON CONFLICT (app_id, function_id, event_id) WHERE origin_run_id IS NULL DO NOTHING
         RETURNING id, app_id, function_id, event_id, lease
       )`;
}

/**
 * The part of closeDueWindows' statement (event-windows.ts) that makes
 * the run of each window of `source` (id: the run's id; app_id,
 * function_id; event_id: the run's event, the last of a debounce window,
 * the first of a batch), QUEUED with a deadline of `deadlineParam`
 * milliseconds (its work is published next), its window_id its own id.
 * A function with flow control gets its run 'unkeyed' here, as the
 * statement for events does, so that it is not among those returned to
 * publish: the slot keeper publishes it. `created` returns them (id,
 * app_id, function_id, lease, slot).
 */
export function WINDOW_RUNS(source: string, deadlineParam: string): string {
  return `created AS (
         INSERT INTO runs (id, app_id, function_id, event_id, status, lease_expires_at, window_id, slot)
         SELECT s.id, s.app_id, s.function_id, s.event_id, 'QUEUED', now() + ${deadlineParam} * interval '1 millisecond', s.id,
           CASE WHEN EXISTS (
             SELECT 1 FROM function_run_rules f WHERE f.app_id = s.app_id AND f.function_id = s.function_id
               AND (f.concurrency <> '[]' OR f.throttle IS NOT NULL OR f.priority IS NOT NULL OR f.admission IS NOT NULL))
           THEN 'unkeyed' END
         FROM ${source} s
         ON CONFLICT (app_id, function_id, event_id) WHERE origin_run_id IS NULL DO NOTHING
         RETURNING id, app_id, function_id, lease, slot
       )`;
}

/** What rerunRun or replayRun did. */
export type DeriveOutcome =
  | { kind: "created"; run: PublishedRunRef }
  | { kind: "unknown" }
  /** A replay of a run that has not ended, with this status. */
  | { kind: "not-ended"; status: RunStatus }
  /** A replay from a step the run has not journaled. */
  | { kind: "no-step" };

/** deriveRuns' statement: $1 the origin runs, $2 the publish deadline (ms), $3 the step to replay from (NULL: reruns). */
const DERIVE_RUNS = `WITH origin AS (
     SELECT id, app_id, function_id, event_id, status, window_id FROM runs WHERE id = ANY($1::uuid[]) ORDER BY id
   ), cut AS (
     SELECT s.run_id, s.seq FROM steps s JOIN origin o ON o.id = s.run_id WHERE s.step_key = $3::text
   ), pick AS (
     SELECT o.id, o.app_id, o.function_id, o.event_id, o.window_id, gen_random_uuid() AS new_id FROM origin o
     WHERE $3::text IS NULL
        OR (o.status IN ('COMPLETED', 'FAILED', 'CANCELLED') AND EXISTS (SELECT 1 FROM cut WHERE cut.run_id = o.id))
   ), created AS (
     -- A run made of an event window keeps its events (window_id).
     INSERT INTO runs (id, app_id, function_id, event_id, status, lease_expires_at, origin_run_id, origin_step_key, window_id)
     SELECT new_id, app_id, function_id, event_id, 'QUEUED', now() + $2 * interval '1 millisecond', id, $3::text, window_id
     FROM pick
     RETURNING id, app_id, function_id, lease, origin_run_id
   ), copied AS (
     INSERT INTO steps (run_id, step_key, step_id, attempt, started_at, ended_at, output, error)
     SELECT p.new_id, s.step_key, s.step_id, s.attempt, s.started_at, s.ended_at, s.output, s.error
     FROM pick p JOIN cut c ON c.run_id = p.id JOIN steps s ON s.run_id = p.id AND s.seq < c.seq
     ORDER BY p.new_id, s.seq
   )
   SELECT o.id::text AS origin, o.status, c.id::text AS id, c.app_id, c.function_id, c.lease,
     EXISTS (SELECT 1 FROM cut WHERE cut.run_id = o.id) AS has_step
   FROM origin o LEFT JOIN created c ON c.origin_run_id = o.id`;

/**
 * Creates a run of the same function with the same event as an origin
 * run, recording where it came from, QUEUED with a deadline of
 * `deadlineMs` (its work is published next). A rerun (`fromStep`
 * undefined) starts from the first step; a replay starts with a copy of
 * the origin's steps journaled before `fromStep`, in their order, and
 * needs an origin that ended. One round trip.
 */
export async function deriveRun(sql: Sql, originRunId: string, fromStep: string | undefined, deadlineMs: number): Promise<DeriveOutcome> {
  return (await deriveRuns(sql, [originRunId], fromStep, deadlineMs))[0] ?? { kind: "unknown" };
}

/** deriveRun for many origin runs in one statement; one outcome per id, in order. */
export async function deriveRuns(
  sql: Sql,
  originRunIds: readonly string[],
  fromStep: string | undefined,
  deadlineMs: number,
): Promise<DeriveOutcome[]> {
  if (originRunIds.length === 0) return [];
  const rows = await sql.query<{
    origin: string;
    status: RunStatus;
    id: string | null;
    app_id: string | null;
    function_id: string | null;
    lease: number | null;
    has_step: boolean;
  }>(DERIVE_RUNS, [originRunIds, deadlineMs, fromStep ?? null]);
  const byOrigin = new Map(rows.map((r) => [r.origin, r]));
  return originRunIds.map((originId): DeriveOutcome => {
    const r = byOrigin.get(originId.toLowerCase());
    if (!r) return { kind: "unknown" };
    if (r.id !== null) {
      return { kind: "created", run: { runId: r.id, appId: r.app_id ?? "", functionId: r.function_id ?? "", lease: Number(r.lease) } };
    }
    if (!ENDED_RUN_STATUSES.has(r.status)) return { kind: "not-ended", status: r.status };
    return { kind: "no-step" };
  });
}

/**
 * Events as one JSON array for jsonb_to_recordset, each one's data
 * embedded as the JSON text it already is (no parse and re-encode). The
 * data comes from the event stream as ingest encoded it; a malformed one
 * fails the statement, and the group commit then writes each event alone.
 */
function eventsDocument(events: readonly EventInput[]): string {
  return `[${events
    .map(
      (e) =>
        `{"id":${JSON.stringify(e.id)},"name":${JSON.stringify(e.name)},"data":${e.dataJson},"ts":${e.tsMs},"rcv":${e.receivedAtMs}${e.traceParent ? `,"tp":${JSON.stringify(e.traceParent)}` : ""}${e.appId ? `,"app":${JSON.stringify(e.appId)}` : ""}}`,
    )
    .join(",")}]`;
}
