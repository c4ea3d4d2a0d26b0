import { WINDOW_RUNS } from "./run-creation.js";
import type { Sql } from "./sql.js";
import type { EventWindowRule, PublishedRunRef } from "./types.js";

// The event windows of debounce and batchEvents (migration 8). An event of
// such a function makes no run of its own: the scheduler that handles it
// gathers it into the open window of its key (gatherEvents), in a
// statement of its own after the event's, before the event is
// acknowledged; a redelivered event is not gathered twice. A window that
// is due becomes one run (closeDueWindows, in each scheduler's timer
// firing), whose claim hands the worker every event of the window.

/** An event to gather into the window of its key. */
export interface GatherItem {
  appId: string;
  functionId: string;
  eventId: string;
  /** The key's value ("" for one window per function). */
  key: string;
  window: EventWindowRule;
}

/**
 * Gathers events into the windows of their keys; an event already
 * gathered for its function is left out. A window's run has its events in
 * the order they were received (by ingest), whatever the order they were
 * gathered in. Tells the timer firings
 * on `channel` when a window opens or fills. Returns how many were
 * gathered. One round trip.
 */
export async function gatherEvents(sql: Sql, channel: string, items: readonly GatherItem[]): Promise<number> {
  if (items.length === 0) return 0;
  const doc = items.map((i) => ({
    a: i.appId,
    f: i.functionId,
    e: i.eventId,
    k: i.key,
    kind: i.window.kind,
    p: i.window.kind === "debounce" ? i.window.periodMs : null,
    t: i.window.timeoutMs ?? null,
    m: i.window.kind === "batch" ? i.window.maxSize : null,
  }));
  const rows = await sql.query<{ n: number }>("SELECT gather_events($1::jsonb, $2) AS n", [JSON.stringify(doc), channel]);
  return Number(rows[0]?.n ?? 0);
}

/** closeDueWindows' statement: $1 how many windows at most, $2 the publish deadline (ms). */
const CLOSE_DUE_WINDOWS = `WITH due AS (
     SELECT id FROM event_windows WHERE due_at <= now()
     ORDER BY due_at LIMIT $1 FOR UPDATE SKIP LOCKED
   ), closed AS (
     DELETE FROM event_windows w USING due WHERE w.id = due.id
     RETURNING w.id, w.app_id, w.function_id, w.kind
   ), made AS (
     -- The run's event: a debounce window's last, a batch's first, in the order the events were received.
     SELECT c.id, c.app_id, c.function_id, CASE c.kind
       WHEN 'debounce' THEN (SELECT x.id FROM window_events we JOIN events x ON x.id = we.event_id
                             WHERE we.window_id = c.id ORDER BY x.received_at DESC, x.id DESC LIMIT 1)
       ELSE (SELECT x.id FROM window_events we JOIN events x ON x.id = we.event_id
             WHERE we.window_id = c.id ORDER BY x.received_at, x.id LIMIT 1) END AS event_id
     FROM closed c
   ), ${WINDOW_RUNS("made", "$2")}
   SELECT id::text AS id, app_id, function_id, lease, slot IS NULL AS publish FROM created`;

/** The runs closeDueWindows made. */
export interface WindowRuns {
  /** The runs whose work is to be published. */
  publish: PublishedRunRef[];
  /** Every run made, those the slot keeper publishes too (a function with flow control). */
  created: string[];
}

/**
 * Makes the run of each of up to `limit` windows that are due, by the
 * database's clock, QUEUED with a deadline of `deadlineMs` until its work
 * is confirmed published; schedulers share them (SKIP LOCKED). Returns
 * the runs made. One round trip.
 */
export async function closeDueWindows(sql: Sql, limit: number, deadlineMs: number): Promise<WindowRuns> {
  const rows = await sql.query<{ id: string; app_id: string; function_id: string; lease: number; publish: boolean }>(CLOSE_DUE_WINDOWS, [
    limit,
    deadlineMs,
  ]);
  return {
    publish: rows.filter((r) => r.publish).map((r) => ({ runId: r.id, appId: r.app_id, functionId: r.function_id, lease: Number(r.lease) })),
    created: rows.map((r) => r.id),
  };
}
