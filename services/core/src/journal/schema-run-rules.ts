import type { Migration } from "./migrations.js";

// Migration 5: what each new run of a function is armed with (its
// timeouts, its cancelOn rules), by the trigger arm_runs on runs.

export const V5: Migration = {
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
-- per statement, a no-op when none of the runs' functions has rules.
CREATE FUNCTION arm_runs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM created c JOIN function_run_rules f ON f.app_id = c.app_id AND f.function_id = c.function_id) THEN
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
};
