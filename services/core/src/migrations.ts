import type { Sql } from "./sql.js";
import { quoteIdent } from "./sql.js";

/** One versioned schema change. Versions only ever grow; applied ones never change. */
export interface Migration {
  version: number;
  name: string;
  sql: string;
}

/**
 * The journal schema, in order. Runs, steps and events are the source of
 * truth for run state; NATS only carries notifications derived from them.
 */
export const migrations: readonly Migration[] = [
  {
    version: 1,
    name: "journal",
    sql: `
CREATE TABLE functions (
  app_id      text NOT NULL,
  function_id text NOT NULL,
  name        text NOT NULL,
  config      jsonb NOT NULL,
  updated_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (app_id, function_id)
);

-- Trigger lookup by event name, the scheduler's hot query.
CREATE TABLE function_triggers (
  event_name  text NOT NULL,
  app_id      text NOT NULL,
  function_id text NOT NULL,
  PRIMARY KEY (event_name, app_id, function_id)
);

CREATE TABLE events (
  id          text PRIMARY KEY,
  name        text NOT NULL,
  data        jsonb NOT NULL,
  ts          timestamptz NOT NULL,
  received_at timestamptz NOT NULL
);

-- status: QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED.
-- lease counts the executions of the run and fences stale ones; executor_id
-- and lease_expires_at say who holds a RUNNING run and until when. For a
-- QUEUED run lease_expires_at is when the reconciler publishes its work
-- again: soon after a hand-back whose publish is unconfirmed, after a long
-- backstop once the work is known to be on the bus.
CREATE TABLE runs (
  id               uuid PRIMARY KEY,
  app_id           text NOT NULL,
  function_id      text NOT NULL,
  event_id         text NOT NULL,
  status           text NOT NULL,
  lease            integer NOT NULL DEFAULT 0,
  executor_id      text,
  lease_expires_at timestamptz,
  -- Milliseconds, like the JS Date of ListRuns' keyset cursor: a finer
  -- value would make paging skip the runs of one millisecond.
  created_at       timestamptz NOT NULL DEFAULT date_trunc('milliseconds', now()),
  started_at       timestamptz,
  ended_at         timestamptz,
  output           jsonb,
  error            jsonb,
  UNIQUE (app_id, function_id, event_id)
);
CREATE INDEX runs_unfinished ON runs (lease_expires_at) WHERE status IN ('QUEUED', 'RUNNING');
CREATE INDEX runs_executor ON runs (executor_id) WHERE status = 'RUNNING';
CREATE INDEX runs_event ON runs (event_id);
CREATE INDEX runs_created ON runs (created_at DESC, id DESC);

-- The journal: one row per step key, first write wins.
CREATE TABLE steps (
  run_id       uuid NOT NULL,
  step_key     text NOT NULL,
  seq          bigint GENERATED ALWAYS AS IDENTITY,
  step_id      text NOT NULL,
  attempt      integer NOT NULL,
  started_at   timestamptz,
  ended_at     timestamptz,
  output       jsonb,
  error        jsonb,
  journaled_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  PRIMARY KEY (run_id, step_key)
);
`,
  },
];

// Arbitrary but fixed: every Stepwise process migrating the same database
// serialises on it.
const MIGRATION_LOCK = 7_310_524_091;

/**
 * Applies the migrations not yet applied, under a transaction-scoped advisory
 * lock so that services starting together migrate once. Returns the versions
 * it applied.
 */
export async function migrate(sql: Sql, options: { schema?: string } = {}): Promise<number[]> {
  return sql.transaction(async (tx) => {
    await tx.query("SELECT pg_advisory_xact_lock($1)", [MIGRATION_LOCK]);
    // Under the lock: concurrent CREATE SCHEMA IF NOT EXISTS of one name race in Postgres.
    if (options.schema) await tx.exec(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(options.schema)}`);
    await tx.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
      version integer PRIMARY KEY,
      name text NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now()
    )`);
    const rows = await tx.query<{ version: number }>("SELECT version FROM schema_migrations");
    const applied = new Set(rows.map((r) => Number(r.version)));
    const done: number[] = [];
    for (const m of migrations) {
      if (applied.has(m.version)) continue;
      await tx.exec(m.sql);
      await tx.query("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", [m.version, m.name]);
      done.push(m.version);
    }
    return done;
  });
}
