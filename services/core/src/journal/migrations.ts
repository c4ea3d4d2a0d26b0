import { V8 } from "./schema-event-windows.js";
import { V9 } from "./schema-workers.js";
import { V10 } from "./schema-traces.js";
import { V11 } from "./schema-singleton-replacements.js";
import { V12 } from "./schema-event-apps.js";
import { V13 } from "./schema-retention.js";
import { V7 } from "./schema-flow-control.js";
import { V5 } from "./schema-run-rules.js";
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
  {
    version: 2,
    name: "waits-timers-retries",
    sql: `
-- When the scheduler stored the event (the database's clock): a wait
-- matches the events stored after it began.
ALTER TABLE events ADD COLUMN stored_at timestamptz NOT NULL DEFAULT clock_timestamp();
CREATE INDEX events_name_stored ON events (name, stored_at);

-- CEL conditions of a function's triggers on this event name; NULL when
-- one of them has none (every event starts a run).
ALTER TABLE function_triggers ADD COLUMN conditions text[];

-- Counts what woke the run (a timer fired, a wait resolved). An execution
-- that suspends compares it with the count it was claimed with: a wake-up
-- that raced with the suspension resumes the run at once instead of
-- leaving it waiting for something that already happened.
ALTER TABLE runs ADD COLUMN wakes integer NOT NULL DEFAULT 0;

-- 'sleep' or 'wait' for a step the engine journaled (a sleep that ended, a
-- wait resolved or timed out); NULL for a step the worker ran. A wait's
-- window opens after the last engine step, or before the last worker step.
ALTER TABLE steps ADD COLUMN kind text;

-- Failed attempts that were retried, of steps and of the handler (step_key
-- ''). A step's last attempt is its row in steps.
CREATE TABLE step_attempts (
  run_id     uuid NOT NULL,
  step_key   text NOT NULL,
  attempt    integer NOT NULL,
  step_id    text NOT NULL,
  started_at timestamptz,
  ended_at   timestamptz,
  error      jsonb NOT NULL,
  retry_at   timestamptz NOT NULL,
  PRIMARY KEY (run_id, step_key, attempt)
);

-- What wakes a WAITING run: a sleep's end, a retry's due time, a wait's
-- timeout. One per step key of a run; step_key '' is the handler's retry.
CREATE TABLE timers (
  run_id  uuid NOT NULL,
  step_key text NOT NULL,
  step_id text NOT NULL,
  kind    text NOT NULL,
  due_at  timestamptz NOT NULL,
  PRIMARY KEY (run_id, step_key)
);
CREATE INDEX timers_due ON timers (due_at);

-- Runs waiting for an event. key_path/key_value index the equality of the
-- condition (event.x == async.y, y's value as text when it is a string),
-- so an event only evaluates the waits its value can match; key_path ''
-- marks a wait every event of the name is evaluated against.
CREATE TABLE waits (
  run_id     uuid NOT NULL,
  step_key   text NOT NULL,
  step_id    text NOT NULL,
  event_name text NOT NULL,
  key_path   text NOT NULL,
  key_value  text NOT NULL,
  condition  text,
  since      timestamptz NOT NULL,
  PRIMARY KEY (run_id, step_key)
);
CREATE INDEX waits_match ON waits (event_name, key_path, key_value);

-- The key paths waits of an event name have used: an event computes its
-- value at each of them, then looks the waits up by index.
CREATE TABLE wait_paths (
  event_name text NOT NULL,
  key_path   text NOT NULL,
  PRIMARY KEY (event_name, key_path)
);

-- Cron triggers: next_at is the next tick to fire. A scheduler fires a due
-- tick and moves next_at in one transaction, under SKIP LOCKED.
CREATE TABLE cron_schedules (
  app_id        text NOT NULL,
  function_id   text NOT NULL,
  trigger_index integer NOT NULL,
  cron          text NOT NULL,
  timezone      text NOT NULL,
  next_at       timestamptz NOT NULL,
  PRIMARY KEY (app_id, function_id, trigger_index)
);
CREATE INDEX cron_schedules_due ON cron_schedules (next_at);
`,
  },
  {
    version: 3,
    name: "event outbox",
    sql: `
-- Events the engine makes itself (a run's cancellation), written in the
-- statement that causes them and deleted once JetStream stored them: the
-- process that made one publishes it, and the scheduler's reconciler
-- publishes those left behind by a process that died first.
CREATE TABLE event_outbox (
  id         text PRIMARY KEY,
  name       text NOT NULL,
  data       jsonb NOT NULL,
  ts         timestamptz NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX event_outbox_age ON event_outbox (created_at);
`,
  },
  {
    version: 4,
    name: "reruns and replays",
    sql: `
-- A run made from another by RerunRun or ReplayRun (origin_step_key: the
-- first step a replay executes again). Such runs share their origin's
-- event, so only the runs an event or a tick started are unique per
-- (app, function, event).
ALTER TABLE runs ADD COLUMN origin_run_id uuid;
ALTER TABLE runs ADD COLUMN origin_step_key text;
ALTER TABLE runs DROP CONSTRAINT runs_app_id_function_id_event_id_key;
CREATE UNIQUE INDEX runs_once_per_event ON runs (app_id, function_id, event_id) WHERE origin_run_id IS NULL;
CREATE INDEX runs_origin ON runs (origin_run_id) WHERE origin_run_id IS NOT NULL;
`,
  },
  V5,
  {
    version: 6,
    name: "invocations",
    sql: `
-- Runs started by step.invoke (the child) and the step of the run that
-- waits for each (the parent's step_key). The child's end journals that
-- step; cancelling the parent cancels its children.
CREATE TABLE invocations (
  child_run_id  uuid PRIMARY KEY,
  parent_run_id uuid NOT NULL,
  step_key      text NOT NULL,
  step_id       text NOT NULL
);
CREATE INDEX invocations_parent ON invocations (parent_run_id);
`,
  },
  V7,
  V8,
  V9,
  V10,
  V11,
  V12,
  V13,
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
