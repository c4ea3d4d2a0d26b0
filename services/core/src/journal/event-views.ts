import { listRunsOfEvents } from "./run-views.js";
import type { Sql } from "./sql.js";
import type { RunView } from "./types.js";

// The read side of the events table: what ListEvents shows.

/** Filter and page of ListEvents. */
export interface EventFilter {
  /** Only events of this name. */
  name?: string | undefined;
  limit: number;
  /** Keyset cursor: events stored before this (stored_at in microseconds since the epoch, id). */
  before?: { storedAtUs: bigint; id: string } | undefined;
}

/** A stored event with the runs it started. */
export interface EventView {
  id: string;
  name: string;
  data: unknown;
  ts: Date;
  receivedAt: Date;
  /** When the scheduler stored it, in microseconds since the epoch: the order of the list and its cursor. */
  storedAtUs: bigint;
  /** Its runs, oldest first, without steps. */
  runs: RunView[];
}

/**
 * Lists events newest first (by when they were stored), each with its
 * runs. Two round trips: the page of events (by index, events_stored or
 * events_name_stored), then the runs of all of them.
 */
export async function listEvents(sql: Sql, filter: EventFilter): Promise<EventView[]> {
  const where: string[] = [];
  const params: unknown[] = [];
  if (filter.name !== undefined) {
    params.push(filter.name);
    where.push(`name = $${params.length}`);
  }
  if (filter.before) {
    // In whole microseconds, as stored: a cursor in milliseconds would skip
    // or repeat the events of one millisecond.
    params.push(filter.before.storedAtUs.toString(), filter.before.id);
    where.push(`(stored_at, id) < ('epoch'::timestamptz + $${params.length - 1}::bigint * interval '1 microsecond', $${params.length}::text)`);
  }
  params.push(filter.limit);
  const rows = await sql.query<{ id: string; name: string; data: unknown; ts: Date; received_at: Date; stored_us: string }>(
    `SELECT id, name, data, ts, received_at,
       ((extract(epoch FROM stored_at - 'epoch'::timestamptz) * 1000000)::bigint)::text AS stored_us FROM events
     ${where.length ? `WHERE ${where.join(" AND ")}` : ""}
     ORDER BY stored_at DESC, id DESC LIMIT $${params.length}`,
    params,
  );
  const runs = await listRunsOfEvents(sql, rows.map((r) => r.id));
  const byEvent = new Map<string, RunView[]>();
  for (const run of runs) {
    const list = byEvent.get(run.event.id);
    if (list) list.push(run);
    else byEvent.set(run.event.id, [run]);
  }
  return rows.map((r) => ({
    id: r.id,
    name: r.name,
    data: typeof r.data === "string" ? (JSON.parse(r.data) as unknown) : r.data,
    ts: r.ts,
    receivedAt: r.received_at,
    storedAtUs: BigInt(r.stored_us),
    runs: byEvent.get(r.id) ?? [],
  }));
}
