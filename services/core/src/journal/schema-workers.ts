import type { Migration } from "./migrations.js";

// Migration 9: what the dashboard reads besides runs. The workers
// connected to each executor (worker-records.ts), which only the executors
// knew, and an index to list the newest events (event-views.ts).

export const V9: Migration = {
  version: 9,
  name: "workers and recent events",
  sql: `
-- A row per worker stream: written by its executor when the worker
-- registers, rewritten with its slots in use at every heartbeat interval
-- of that executor, deleted when the stream ends. expires_at is three
-- intervals after the last write: past it the executor stopped (a crash,
-- a lost database), ListWorkers leaves the row out, and the next write of
-- any executor deletes it. Never written per step or per run.
CREATE TABLE workers (
  session_id    uuid PRIMARY KEY,
  worker_id     text NOT NULL,
  app_id        text NOT NULL,
  function_ids  text[] NOT NULL,
  capacity      integer NOT NULL,
  slots_in_use  integer NOT NULL,
  sdk           text NOT NULL,
  executor_id   text NOT NULL,
  executor_host text NOT NULL,
  connected_at  timestamptz NOT NULL,
  heartbeat_at  timestamptz NOT NULL,
  expires_at    timestamptz NOT NULL
);
CREATE INDEX workers_expires ON workers (expires_at);

-- ListEvents pages the events newest first, by when they were stored.
CREATE INDEX events_stored ON events (stored_at DESC, id DESC);
`,
};
