import type { OutboxEvent } from "./run-ends.js";
import type { Sql } from "./sql.js";

// The event outbox: events the engine makes itself, written in the statement
// that causes them (cancelRun's "stepwise/run.cancelled"), until JetStream
// stored them. The process that made an event publishes it and deletes it;
// the scheduler's reconciler publishes what a process left behind.

/** Events written more than `olderThanMs` ago and still in the outbox, oldest first. One round trip. */
export async function outboxEvents(sql: Sql, olderThanMs: number, limit: number): Promise<OutboxEvent[]> {
  const rows = await sql.query<{ id: string; name: string; data: string; ts_ms: number | string }>(
    `SELECT id, name, data::text AS data, (extract(epoch FROM ts) * 1000)::float8 AS ts_ms FROM event_outbox
     WHERE created_at < now() - $1 * interval '1 millisecond' ORDER BY created_at LIMIT $2`,
    [olderThanMs, limit],
  );
  return rows.map((r) => ({ id: r.id, name: r.name, dataJson: r.data, tsMs: Math.floor(Number(r.ts_ms)) }));
}

/** Removes events JetStream stored. One round trip. */
export async function deleteOutboxEvents(sql: Sql, ids: readonly string[]): Promise<void> {
  if (ids.length === 0) return;
  await sql.query("DELETE FROM event_outbox WHERE id = ANY($1::text[])", [ids]);
}
