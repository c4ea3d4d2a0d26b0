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
  {
    version: 5,
    name: "cancel-on and timeouts",
    sql: `
-- What each new run of a function is armed with: its timeouts (ms) and
-- its cancelOn rules, a JSON array of {event, cond, ep, ap, timeout}
-- (ep/ap: the paths of the condition's indexable equality in the run's
-- event and in the cancelling one; timeout: ms after the run's start
-- during which the rule holds). Written at registration, and only for a
-- function that has some.
CREATE TABLE function_run_rules (
  app_id      text NOT NULL,
  function_id text NOT NULL,
  start_ms    float8,
  finish_ms   float8,
  cancel_on   jsonb NOT NULL DEFAULT '[]',
  PRIMARY KEY (app_id, function_id)
);

-- The deadline of a run whose function has timeouts: kind 'start' (due
-- start_ms after creation; infinity with no start timeout) until its
-- first claim, which replaces it by 'finish' (due finish_ms after) or
-- drops it. A scheduler cancels the runs whose deadline passed.
CREATE TABLE run_deadlines (
  run_id    uuid PRIMARY KEY,
  kind      text NOT NULL,
  due_at    timestamptz NOT NULL,
  start_ms  float8,
  finish_ms float8
);
CREATE INDEX run_deadlines_due ON run_deadlines (due_at);

-- A cancelOn rule of a run that has not ended: an event of event_name
-- received from since (until until) whose condition holds cancels it.
-- Indexed like waits (key_path/key_value; wait_paths lists the paths).
CREATE TABLE cancel_waits (
  run_id     uuid NOT NULL,
  idx        integer NOT NULL,
  event_name text NOT NULL,
  key_path   text NOT NULL,
  key_value  text NOT NULL,
  condition  text,
  since      timestamptz NOT NULL,
  until      timestamptz,
  PRIMARY KEY (run_id, idx)
);
CREATE INDEX cancel_waits_match ON cancel_waits (event_name, key_path, key_value);

-- Every statement that creates runs arms them here, in the same
-- transaction, whichever path made them (an event, a cron tick, an
-- onFailure handler, a rerun or a replay, an invocation): one execution
-- per statement, a no-op while no function has rules.
CREATE FUNCTION arm_runs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM function_run_rules) THEN
    RETURN NULL;
  END IF;
  INSERT INTO run_deadlines (run_id, kind, due_at, start_ms, finish_ms)
  SELECT c.id, 'start',
    CASE WHEN f.start_ms IS NULL THEN 'infinity'::timestamptz ELSE c.created_at + f.start_ms * interval '1 millisecond' END,
    f.start_ms, f.finish_ms
  FROM created c JOIN function_run_rules f ON f.app_id = c.app_id AND f.function_id = c.function_id
  WHERE f.start_ms IS NOT NULL OR f.finish_ms IS NOT NULL
  ON CONFLICT (run_id) DO NOTHING;
  -- A run an event started listens from when that event was received (a
  -- cancelling event sent after it may be stored first); one a rerun,
  -- a replay or an invocation made, from its creation.
  INSERT INTO cancel_waits (run_id, idx, event_name, key_path, key_value, condition, since, until)
  SELECT c.id, x.i::int, x.r->>'event',
    CASE WHEN k.indexed THEN x.r->>'ap' ELSE '' END, CASE WHEN k.indexed THEN k.j #>> '{}' ELSE '' END,
    nullif(x.r->>'cond', ''), s.since,
    s.since + (x.r->>'timeout')::float8 * interval '1 millisecond'
  FROM created c
  JOIN function_run_rules f ON f.app_id = c.app_id AND f.function_id = c.function_id AND f.cancel_on <> '[]'
  JOIN events e ON e.id = c.event_id
  CROSS JOIN LATERAL jsonb_array_elements(f.cancel_on) WITH ORDINALITY AS x(r, i)
  CROSS JOIN LATERAL (SELECT CASE WHEN c.origin_run_id IS NULL THEN least(e.received_at, c.created_at) ELSE c.created_at END AS since) s
  -- The equality's value in the run's event: indexed only for a string
  -- of reasonable length (a btree row has a size limit).
  CROSS JOIN LATERAL (
    SELECT j, jsonb_typeof(j) = 'string' AND length(j #>> '{}') <= 512 AS indexed
    FROM (SELECT jsonb_build_object('id', e.id, 'name', e.name, 'data', e.data)
            #> string_to_array(coalesce(x.r->>'ep', ''), '.') AS j) doc
  ) k
  ON CONFLICT (run_id, idx) DO NOTHING;
  RETURN NULL;
END $$;
CREATE TRIGGER runs_arm AFTER INSERT ON runs REFERENCING NEW TABLE AS created
  FOR EACH STATEMENT EXECUTE FUNCTION arm_runs();
`,
  },
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
