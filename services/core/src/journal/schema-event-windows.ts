import type { Migration } from "./migrations.js";

// Migration 8: the event windows of debounce and batchEvents. The events
// of such a function make no run of their own: a scheduler gathers each
// into the open window of its key (gather_events, called by
// event-windows.ts), and a window that is due becomes one run
// (closeDueWindows, with run-creation.ts's WINDOW_RUNS).

export const V8: Migration = {
  version: 8,
  name: "event windows",
  sql: `
-- How a function gathers its events into runs, as registered:
-- {kind: 'debounce', periodMs, timeoutMs, key} or {kind: 'batch', maxSize,
-- timeoutMs, key}; null for one run per event.
ALTER TABLE function_run_rules ADD COLUMN gather jsonb;
-- Set at registration on the triggers of such a function: the
-- scheduler's statement for events returns them to be gathered instead of
-- creating runs.
ALTER TABLE function_triggers ADD COLUMN gather boolean NOT NULL DEFAULT false;

-- The windows of each key of a function: a window becomes the run with
-- its id once due_at passed (debounce: period after its last event,
-- capped at timeout after its first; batch: timeout after its first, or
-- at once when full). A key has one open window, which takes its new
-- events; a full batch is closed to them.
CREATE TABLE event_windows (
  id             uuid PRIMARY KEY,
  app_id         text NOT NULL,
  function_id    text NOT NULL,
  key            text NOT NULL,
  open           boolean NOT NULL,
  kind           text NOT NULL,
  first_at       timestamptz NOT NULL,
  due_at         timestamptz NOT NULL,
  size           integer NOT NULL
);
CREATE UNIQUE INDEX event_windows_open ON event_windows (app_id, function_id, key) WHERE open;
CREATE INDEX event_windows_due ON event_windows (due_at);

-- Which window each gathered event went to (once per function, however
-- often the event is delivered): after the window closed, the events of
-- its run.
CREATE TABLE window_events (
  app_id      text NOT NULL,
  function_id text NOT NULL,
  event_id    text NOT NULL,
  window_id   uuid NOT NULL,
  PRIMARY KEY (app_id, function_id, event_id)
);
CREATE INDEX window_events_window ON window_events (window_id);

-- The window a run was made of (itself, or its origin's for a rerun or a
-- replay): the claim hands the worker its events.
ALTER TABLE runs ADD COLUMN window_id uuid;

-- Gathers events into the open windows of their keys, in the order
-- given: items [{a, f, e, k, kind, p, t, m}] (app, function, event id,
-- key value; kind 'debounce' or 'batch', period ms, timeout ms or null,
-- max size). An event already gathered for its function is left out. A
-- window is created by its first event; each event moves a debounce
-- window's due time, and fills a batch, closed to new events and due at
-- once when full. Each window is locked before it is read (a window
-- closed meanwhile is created again). Tells the schedulers on channel when a window was
-- created or became due; returns how many events were gathered.
CREATE FUNCTION gather_events(items jsonb, channel text) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
  i record;
  w record;
  n integer := 0;
  wake boolean := false;
BEGIN
  FOR i IN
    SELECT * FROM jsonb_to_recordset(items) AS x(a text, f text, e text, k text, kind text, p float8, t float8, m integer)
    ORDER BY x.a, x.f, x.k
  LOOP
    CONTINUE WHEN EXISTS (
      SELECT 1 FROM window_events we WHERE we.app_id = i.a AND we.function_id = i.f AND we.event_id = i.e);
    LOOP
      INSERT INTO event_windows (id, app_id, function_id, key, open, kind, first_at, due_at, size)
      VALUES (gen_random_uuid(), i.a, i.f, i.k, true, i.kind, now(), 'infinity', 0)
      ON CONFLICT (app_id, function_id, key) WHERE open DO NOTHING;
      SELECT * INTO w FROM event_windows x WHERE x.app_id = i.a AND x.function_id = i.f AND x.key = i.k AND x.open FOR UPDATE;
      -- Not found: the window was closed (full, or made a run) since the insert looked.
      EXIT WHEN FOUND;
    END LOOP;
    INSERT INTO window_events (app_id, function_id, event_id, window_id) VALUES (i.a, i.f, i.e, w.id)
    ON CONFLICT (app_id, function_id, event_id) DO NOTHING;
    IF NOT FOUND THEN
      -- Gathered meanwhile by another scheduler: a window this made for it goes.
      DELETE FROM event_windows x WHERE x.id = w.id AND x.size = 0;
      CONTINUE;
    END IF;
    n := n + 1;
    IF w.size = 0 OR (i.kind = 'batch' AND w.size + 1 >= i.m) THEN
      wake := true;
    END IF;
    UPDATE event_windows x SET
      size = w.size + 1,
      open = NOT (i.kind = 'batch' AND w.size + 1 >= i.m),
      due_at = CASE
        WHEN i.kind = 'batch' AND w.size + 1 >= i.m THEN now()
        WHEN i.kind = 'batch' THEN w.first_at + i.t * interval '1 millisecond'
        WHEN i.t IS NULL THEN now() + i.p * interval '1 millisecond'
        ELSE least(now() + i.p * interval '1 millisecond', w.first_at + i.t * interval '1 millisecond') END
    WHERE x.id = w.id;
  END LOOP;
  IF wake THEN
    PERFORM pg_notify(channel, 'windows');
  END IF;
  RETURN n;
END $$;
`,
};
