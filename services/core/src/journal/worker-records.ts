import type { Sql } from "./sql.js";

// The workers connected to the executors, as ListWorkers shows them
// (migration 9). Each executor writes its own workers' rows when one
// registers, at its heartbeat interval and when a stream ends; nothing
// here runs per step or per run.

/** A worker stream as its executor records it. */
export interface WorkerRecord {
  /** Unique per stream: a worker that reconnects gets a new row. */
  sessionId: string;
  workerId: string;
  appId: string;
  functionIds: readonly string[];
  capacity: number;
  slotsInUse: number;
  sdk: string;
  connectedAt: Date;
}

/** Which executor writes the records, and how long they hold without another write. */
export interface WorkerExecutor {
  executorId: string;
  executorHost: string;
  /** From the write until the row is left out: three heartbeat intervals. */
  expiresInMs: number;
}

/** A connected worker as ListWorkers shows it. */
export interface WorkerView extends Omit<WorkerRecord, "sessionId"> {
  executorId: string;
  executorHost: string;
  heartbeatAt: Date;
}

/**
 * Upserts the rows of an executor's workers, as of now, and deletes the
 * rows of other executors that expired (SKIP LOCKED: executors that clean
 * up at once take different rows; an executor's own expired rows, after a
 * pause, are rewritten instead). One round trip.
 */
export async function recordWorkers(sql: Sql, executor: WorkerExecutor, workers: readonly WorkerRecord[]): Promise<void> {
  await sql.query(
    `WITH gone AS (
       DELETE FROM workers WHERE session_id IN (
         SELECT session_id FROM workers WHERE expires_at < now() AND executor_id <> $2
         ORDER BY session_id FOR UPDATE SKIP LOCKED)
     )
     INSERT INTO workers (session_id, worker_id, app_id, function_ids, capacity, slots_in_use, sdk,
                          executor_id, executor_host, connected_at, heartbeat_at, expires_at)
     SELECT w.s, w.w, w.a, ARRAY(SELECT jsonb_array_elements_text(w.f)), w.c, w.u, w.k,
            $2, $3, to_timestamp(w.t / 1000.0), now(), now() + make_interval(secs => $4::float8 / 1000)
     FROM jsonb_to_recordset($1::jsonb) AS w(s uuid, w text, a text, f jsonb, c int, u int, k text, t float8)
     ORDER BY w.s
     ON CONFLICT (session_id) DO UPDATE SET slots_in_use = excluded.slots_in_use,
       heartbeat_at = excluded.heartbeat_at, expires_at = excluded.expires_at`,
    [
      JSON.stringify(
        workers.map((w) => ({
          s: w.sessionId,
          w: w.workerId,
          a: w.appId,
          f: w.functionIds,
          c: w.capacity,
          u: w.slotsInUse,
          k: w.sdk,
          t: w.connectedAt.getTime(),
        })),
      ),
      executor.executorId,
      executor.executorHost,
      executor.expiresInMs,
    ],
  );
}

/** Deletes the row of a worker stream that ended. One round trip. */
export async function removeWorker(sql: Sql, sessionId: string): Promise<void> {
  await sql.query("DELETE FROM workers WHERE session_id = $1", [sessionId]);
}

/** The workers whose executors keep their rows current, of one app or all. One round trip. */
export async function listWorkers(sql: Sql, appId: string | undefined): Promise<WorkerView[]> {
  const rows = await sql.query<{
    worker_id: string;
    app_id: string;
    function_ids: string[];
    capacity: number;
    slots_in_use: number;
    sdk: string;
    executor_id: string;
    executor_host: string;
    connected_at: Date;
    heartbeat_at: Date;
  }>(
    `SELECT worker_id, app_id, function_ids, capacity, slots_in_use, sdk, executor_id, executor_host, connected_at, heartbeat_at
     FROM workers WHERE expires_at > now() AND ($1::text IS NULL OR app_id = $1)
     ORDER BY app_id, executor_id, worker_id, session_id`,
    [appId ?? null],
  );
  return rows.map((r) => ({
    workerId: r.worker_id,
    appId: r.app_id,
    functionIds: r.function_ids,
    capacity: Number(r.capacity),
    slotsInUse: Number(r.slots_in_use),
    sdk: r.sdk,
    executorId: r.executor_id,
    executorHost: r.executor_host,
    connectedAt: r.connected_at,
    heartbeatAt: r.heartbeat_at,
  }));
}
