import type { PublishedRunRef } from "./types.js";
import type { Sql } from "./sql.js";
import { WAKE_RUNS } from "./timer-store.js";

/** An event as waits see it. */
export interface WaitEvent {
  id: string;
  name: string;
  /** JSON text of the data object. */
  dataJson: string;
  tsMs: number;
  /** The one app whose runs' waits and cancelOn rules the event reaches; every app when undefined. */
  appId?: string | undefined;
}

/** A wait that an event may resolve, with what its condition needs. */
export interface WaitCandidate {
  runId: string;
  stepKey: string;
  condition: string | null;
  /** The waiting run's triggering event, bound as `event` in the condition. */
  runEvent: WaitEvent;
}

/** A wait of one run with an event stored since the wait began, for the lookback. */
export interface LookbackCandidate {
  stepKey: string;
  /** When the event was stored, exactly as the database keeps it (the page cursor). */
  storedAt: string;
  condition: string | null;
  event: WaitEvent;
  runEvent: WaitEvent;
}

/**
 * A cancelOn rule of a run that an event may fire: the run is cancelled
 * when the condition holds.
 */
export interface CancelCandidate {
  runId: string;
  condition: string | null;
  /** The run's triggering event, bound as `event` in the condition. */
  runEvent: WaitEvent;
  /** The event that cancels the run if the condition holds, bound as `async`. */
  event: WaitEvent;
}

/** An event looked up by the scheduler once stored, and the runs it created. */
export interface EventLookup {
  event: WaitEvent;
  storedAtMs: number;
  /** When ingest received it: a cancelOn rule holds for events received in its window. */
  receivedAtMs?: number;
  /** Runs the event created: the cancelling events stored before their rules are looked back for. */
  newRunIds?: readonly string[];
}

/** What an event may do to runs: resolve waits, cancel runs. */
export interface EventMatches {
  waits: WaitCandidate[];
  cancels: CancelCandidate[];
}

/** Events a cancelOn rule of a new run looks back at, at most. */
export const CANCEL_LOOKBACK_LIMIT = 100;

/** A wait resolved by an event: the step's result is the event. */
export interface WaitMatch {
  runId: string;
  stepKey: string;
  /** JSON text of the step's result. */
  outputJson: string;
}

/** Events one page of a lookback reads. */
export const LOOKBACK_PAGE = 1_000;

/**
 * WaitStore holds the SQL of step.waitForEvent. Waits are found by index:
 * by event name and, when the condition has an equality with the run's
 * event, by the awaited event's value at the equality's path.
 *
 * Neither an event nor a wait is missed when they race: the scheduler
 * stores an event, commits, then looks for waits (candidates); a suspension
 * stores its waits, commits, then looks for events stored since the wait
 * began (lookback). Whichever commits second sees the other. Both may see
 * each other; resolve lets only one event resolve a wait.
 */
export class WaitStore {
  constructor(private readonly sql: Sql) {}

  /** The waits an event stored at storedAtMs may resolve. One round trip. */
  async candidates(event: WaitEvent, storedAtMs: number): Promise<WaitCandidate[]> {
    return (await this.matchesMany([{ event, storedAtMs }]))[0]?.waits ?? [];
  }

  /**
   * candidates for many events in one statement; one list per event, in
   * order.
   */
  async candidatesMany(events: ReadonlyArray<{ event: WaitEvent; storedAtMs: number }>): Promise<WaitCandidate[][]> {
    return (await this.matchesMany(events)).map((m) => m.waits);
  }

  /**
   * What each event may do, in one statement: the waits it may resolve,
   * the runs whose cancelOn rules it may fire (received in the rule's
   * window, not the run's own event), and, for the runs it created, the
   * events stored already that may fire their rules (up to
   * CANCEL_LOOKBACK_LIMIT per rule, oldest first). The scheduler stores an
   * event and creates its runs with their rules, commits, then calls this:
   * so of an event and a rule that race, whichever commits second sees
   * the other. One result per lookup, in order.
   */
  async matchesMany(lookups: readonly EventLookup[]): Promise<EventMatches[]> {
    const newRuns = lookups.flatMap((l, i) => (l.newRunIds ?? []).map((id) => ({ id, n: i + 1 })));
    const rows = await this.sql.query<{
      kind: string;
      n: number | string;
      run_id: string;
      step_key: string | null;
      condition: string | null;
      e_id: string;
      e_name: string;
      e_data: string;
      e_ts: number | string;
      a_id: string | null;
      a_name: string | null;
      a_data: string | null;
      a_ts: number | string | null;
    }>(
      // The inputs come as JSON documents, not arrays: jsonb_to_recordset
      // is sized the same whatever its argument, so Postgres keeps one
      // generic plan of this prepared statement instead of planning it
      // anew at each execution (about 2 ms).
      `WITH x AS (
         SELECT n, id AS event_id, name, jsonb_build_object('id', id, 'name', name, 'data', data) AS d, stored,
           to_timestamp(rcv / 1000.0) AS received, app
         FROM jsonb_to_recordset($1::jsonb) AS x(id text, name text, data jsonb, stored float8, rcv float8, n int, app text)
       ), cand AS (
         SELECT x.n, x.event_id, w.run_id, w.step_key, w.condition, w.since, x.stored, x.app FROM x
         JOIN waits w ON w.event_name = x.name AND w.key_path = ''
         UNION ALL
         SELECT x.n, x.event_id, w.run_id, w.step_key, w.condition, w.since, x.stored, x.app FROM x
         JOIN wait_paths p ON p.event_name = x.name
           AND jsonb_typeof(x.d #> string_to_array(p.key_path, '.')) = 'string'
         JOIN waits w ON w.event_name = x.name AND w.key_path = p.key_path
           AND w.key_value = (x.d #>> string_to_array(p.key_path, '.'))
       ), cc AS (
         SELECT x.n, x.event_id, c.run_id, c.condition, x.app FROM x
         JOIN cancel_waits c ON c.event_name = x.name AND c.key_path = ''
         WHERE c.since <= x.received AND (c.until IS NULL OR x.received <= c.until)
         UNION ALL
         SELECT x.n, x.event_id, c.run_id, c.condition, x.app FROM x
         JOIN wait_paths p ON p.event_name = x.name
           AND jsonb_typeof(x.d #> string_to_array(p.key_path, '.')) = 'string'
         JOIN cancel_waits c ON c.event_name = x.name AND c.key_path = p.key_path
           AND c.key_value = (x.d #>> string_to_array(p.key_path, '.'))
         WHERE c.since <= x.received AND (c.until IS NULL OR x.received <= c.until)
       ), lb AS (
         SELECT nr.n, c.run_id, c.condition, a.id, a.name, a.data, a.ts
         FROM jsonb_to_recordset($2::jsonb) AS nr(run_id uuid, n int)
         JOIN cancel_waits c ON c.run_id = nr.run_id
         CROSS JOIN LATERAL (SELECT event_id, app_id FROM runs WHERE id = c.run_id OFFSET 0) r
         CROSS JOIN LATERAL (
           -- stored_at bounds the index range; received_at is the window
           -- (an event is stored after it is received, give or take the
           -- clocks of ingest and the database).
           SELECT a.* FROM events a
           WHERE a.name = c.event_name AND a.stored_at >= c.since - interval '1 minute'
             AND a.received_at >= c.since AND (c.until IS NULL OR a.received_at <= c.until) AND a.id <> r.event_id
             AND (a.app_id IS NULL OR a.app_id = r.app_id)
             AND (c.key_path = '' OR (
               jsonb_typeof(jsonb_build_object('id', a.id, 'name', a.name, 'data', a.data) #> string_to_array(c.key_path, '.')) = 'string'
               AND (jsonb_build_object('id', a.id, 'name', a.name, 'data', a.data) #>> string_to_array(c.key_path, '.')) = c.key_value))
           ORDER BY a.stored_at LIMIT ${CANCEL_LOOKBACK_LIMIT}
         ) a
       )
       SELECT 'wait' AS kind, c.n, c.run_id, c.step_key, c.condition, e.id AS e_id, e.name AS e_name, e.data::text AS e_data,
         (extract(epoch FROM e.ts) * 1000)::float8 AS e_ts, NULL AS a_id, NULL AS a_name, NULL AS a_data, NULL::float8 AS a_ts
       FROM cand c
       CROSS JOIN LATERAL (SELECT event_id, app_id FROM runs WHERE id = c.run_id OFFSET 0) r
       CROSS JOIN LATERAL (SELECT * FROM events WHERE id = r.event_id OFFSET 0) e
       WHERE c.since <= to_timestamp(c.stored / 1000.0) AND r.event_id <> c.event_id AND (c.app IS NULL OR r.app_id = c.app)
       UNION ALL
       SELECT 'cancel', c.n, c.run_id, NULL, c.condition, e.id, e.name, e.data::text, (extract(epoch FROM e.ts) * 1000)::float8,
         NULL, NULL, NULL, NULL
       FROM cc c
       CROSS JOIN LATERAL (SELECT event_id, app_id FROM runs WHERE id = c.run_id OFFSET 0) r
       CROSS JOIN LATERAL (SELECT * FROM events WHERE id = r.event_id OFFSET 0) e
       WHERE r.event_id <> c.event_id AND (c.app IS NULL OR r.app_id = c.app)
       UNION ALL
       SELECT 'lookback', l.n, l.run_id, NULL, l.condition, e.id, e.name, e.data::text, (extract(epoch FROM e.ts) * 1000)::float8,
         l.id, l.name, l.data::text, (extract(epoch FROM l.ts) * 1000)::float8
       FROM lb l
       CROSS JOIN LATERAL (SELECT event_id FROM runs WHERE id = l.run_id OFFSET 0) r
       CROSS JOIN LATERAL (SELECT * FROM events WHERE id = r.event_id OFFSET 0) e`,
      [
        `[${lookups
          .map(
            (x, i) =>
              `{"id":${JSON.stringify(x.event.id)},"name":${JSON.stringify(x.event.name)},"data":${x.event.dataJson},"stored":${x.storedAtMs},"rcv":${x.receivedAtMs ?? x.storedAtMs},"n":${i + 1}${x.event.appId ? `,"app":${JSON.stringify(x.event.appId)}` : ""}}`,
          )
          .join(",")}]`,
        JSON.stringify(newRuns.map((r) => ({ run_id: r.id, n: r.n }))),
      ],
    );
    const out: EventMatches[] = lookups.map(() => ({ waits: [], cancels: [] }));
    for (const r of rows) {
      const into = out[Number(r.n) - 1];
      if (!into) continue;
      const runEvent = { id: r.e_id, name: r.e_name, dataJson: r.e_data, tsMs: Number(r.e_ts) };
      if (r.kind === "wait") {
        into.waits.push({ runId: r.run_id, stepKey: r.step_key ?? "", condition: r.condition, runEvent });
      } else if (r.kind === "cancel") {
        into.cancels.push({ runId: r.run_id, condition: r.condition, runEvent, event: lookups[Number(r.n) - 1]!.event });
      } else {
        const event = { id: r.a_id ?? "", name: r.a_name ?? "", dataJson: r.a_data ?? "{}", tsMs: Number(r.a_ts) };
        into.cancels.push({ runId: r.run_id, condition: r.condition, runEvent, event });
      }
    }
    return out;
  }

  /**
   * For runs created outside the event stream (cron ticks, onFailure
   * handlers, reruns and replays, invocations): the events stored already
   * that may fire their cancelOn rules, as matchesMany looks back. One
   * round trip.
   */
  async cancelLookback(runIds: readonly string[]): Promise<CancelCandidate[]> {
    if (runIds.length === 0) return [];
    return (await this.matchesMany([{ event: { id: "", name: "", dataJson: "{}", tsMs: 0 }, storedAtMs: 0, newRunIds: runIds }]))[0]?.cancels ?? [];
  }

  /**
   * The events stored since each wait of a run began that may resolve it,
   * oldest first, a page of up to LOOKBACK_PAGE at a time: pass the last
   * candidate of a page as `after` for the next. One round trip.
   */
  async lookback(runId: string, after?: LookbackCandidate): Promise<LookbackCandidate[]> {
    const rows = await this.sql.query<{
      step_key: string;
      condition: string | null;
      id: string;
      name: string;
      data: string;
      ts: number | string;
      r_id: string;
      r_name: string;
      r_data: string;
      r_ts: number | string;
      stored_at: string;
    }>(
      `SELECT w.step_key, w.condition, e.stored_at::text AS stored_at, e.id, e.name, e.data::text AS data, (extract(epoch FROM e.ts) * 1000)::float8 AS ts,
         re.id AS r_id, re.name AS r_name, re.data::text AS r_data, (extract(epoch FROM re.ts) * 1000)::float8 AS r_ts
       FROM waits w
       JOIN runs r ON r.id = w.run_id
       JOIN events re ON re.id = r.event_id
       JOIN events e ON e.name = w.event_name AND e.stored_at >= w.since AND e.id <> r.event_id
         AND (e.app_id IS NULL OR e.app_id = r.app_id)
         AND (w.key_path = '' OR (jsonb_typeof(jsonb_build_object('id', e.id, 'name', e.name, 'data', e.data) #> string_to_array(w.key_path, '.')) = 'string'
           AND (jsonb_build_object('id', e.id, 'name', e.name, 'data', e.data) #>> string_to_array(w.key_path, '.')) = w.key_value))
       WHERE w.run_id = $1 AND ($3::text IS NULL OR (e.stored_at, e.id, w.step_key) > ($4::timestamptz, $3, $5))
       ORDER BY e.stored_at, e.id, w.step_key
       LIMIT $2`,
      [runId, LOOKBACK_PAGE, after?.event.id ?? null, after?.storedAt ?? null, after?.stepKey ?? null],
    );
    return rows.map((r) => ({
      stepKey: r.step_key,
      condition: r.condition,
      storedAt: r.stored_at,
      event: { id: r.id, name: r.name, dataJson: r.data, tsMs: Number(r.ts) },
      runEvent: { id: r.r_id, name: r.r_name, dataJson: r.r_data, tsMs: Number(r.r_ts) },
    }));
  }

  /**
   * Resolves waits: each one still waiting (an event or its timeout may
   * have resolved it first) is dropped with its timeout, its step is
   * journaled with the event, and its run woken. Returns the runs QUEUED
   * by it, whose work must be published (short deadline until
   * markPublished). One round trip.
   */
  async resolve(matches: readonly WaitMatch[], requeueAfterMs: number): Promise<PublishedRunRef[]> {
    if (matches.length === 0) return [];
    const rows = await this.sql.query<{ id: string; app_id: string; function_id: string; lease: number }>(
      `WITH m AS (
         SELECT DISTINCT ON (r, k) * FROM jsonb_to_recordset($1::jsonb) AS m(r uuid, k text, o text)
       ), locked AS (
         -- Timers first, then waits: the order fireDue takes them in, so
         -- the two never deadlock on one wait.
         SELECT t.run_id FROM timers t JOIN m ON t.run_id = m.r AND t.step_key = m.k FOR UPDATE OF t
       ), w AS (
         DELETE FROM waits w USING m
         WHERE w.run_id = m.r AND w.step_key = m.k AND (SELECT count(*) FROM locked) >= 0
         RETURNING w.run_id, w.step_key, w.step_id, m.o
       ), t AS (
         DELETE FROM timers t USING w WHERE t.run_id = w.run_id AND t.step_key = w.step_key
       ), j AS (
         INSERT INTO steps (run_id, step_key, step_id, attempt, started_at, ended_at, output, kind)
         SELECT w.run_id, w.step_key, w.step_id, 1, now(), now(), w.o::jsonb, 'wait' FROM w
         ON CONFLICT (run_id, step_key) DO NOTHING
         RETURNING run_id
       )
       ${WAKE_RUNS("SELECT run_id FROM j")}`,
      [JSON.stringify(matches.map((m) => ({ r: m.runId, k: m.stepKey, o: m.outputJson }))), requeueAfterMs],
    );
    return rows.map((r) => ({ runId: r.id, appId: r.app_id, functionId: r.function_id, lease: Number(r.lease) }));
  }
}
