import type { Migration } from "./migrations.js";

// Migration 7: flow control that decides whether and when a run starts
// (concurrency limits, throttles, priorities, rate limits, idempotency
// keys, singletons): the slot of a run, moved with its status by the
// trigger move_run_slot, and the functions admit_runs and grant_run_slots
// that the schedulers' slot keepers call (concurrency-slots.ts).

export const V7: Migration = {
  version: 7,
  name: "flow control",
  sql: `
-- Flow control that decides whether and when a run starts. A run of a
-- function with any has slot set: 'unkeyed' when created ('admitted' once
-- a scheduler let it start at all, for a function with an idempotency
-- key, a rate limit or a singleton), until a scheduler computes its keys
-- from its event (ckey1, ckey2: a concurrency limit's
-- scope and key value; tkey: its throttle's) and its place in the queue
-- (queued_at: its creation moved earlier by its priority); then
-- 'waiting' while QUEUED without a slot; 'granted' once a scheduler let it
-- start (its work published) and while it is RUNNING; 'idle' while
-- WAITING (a sleep or a wait holds no slot) and once it ended. Only a run
-- with no slot or a 'granted' one can be claimed. The schedulers grant
-- under each key's row lock (grant_run_slots).
ALTER TABLE runs ADD COLUMN slot text;
ALTER TABLE runs ADD COLUMN ckey1 text;
ALTER TABLE runs ADD COLUMN ckey2 text;
ALTER TABLE runs ADD COLUMN tkey text;
ALTER TABLE runs ADD COLUMN queued_at timestamptz;
CREATE INDEX runs_slot_unkeyed ON runs (created_at) WHERE slot IN ('unkeyed', 'admitted');
CREATE INDEX runs_slot_waiting1 ON runs (ckey1, queued_at) WHERE slot = 'waiting';
CREATE INDEX runs_slot_waiting2 ON runs (ckey2) WHERE slot = 'waiting';
CREATE INDEX runs_slot_waiting_t ON runs (tkey, queued_at) WHERE slot = 'waiting';
CREATE INDEX runs_slot_granted1 ON runs (ckey1) WHERE slot = 'granted';
CREATE INDEX runs_slot_granted2 ON runs (ckey2) WHERE slot = 'granted';

-- A function's flow control as registered: concurrency, a JSON array of
-- {limit, key, scope}; throttle, {limit, period_ms, burst, key} or null;
-- priority, the CEL of its run priority or null.
ALTER TABLE function_run_rules ADD COLUMN concurrency jsonb NOT NULL DEFAULT '[]';
ALTER TABLE function_run_rules ADD COLUMN throttle jsonb;
ALTER TABLE function_run_rules ADD COLUMN priority text;
-- What decides whether a run starts at all: {idempotency: CEL, rateLimit:
-- {limit, periodMs, key}, singleton: {key, mode}}, or null.
ALTER TABLE function_run_rules ADD COLUMN admission jsonb;

-- The singleton key of a run admitted under one (at most one run of a key
-- has not ended).
ALTER TABLE runs ADD COLUMN skey text;
CREATE INDEX runs_singleton ON runs (skey) WHERE skey IS NOT NULL AND status IN ('QUEUED', 'RUNNING', 'WAITING');

-- The run that took an idempotency key, until it expires (24 hours).
CREATE TABLE idempotency_keys (
  key        text PRIMARY KEY,
  run_id     uuid NOT NULL,
  expires_at timestamptz NOT NULL
);

-- A rate limit's window per key: count runs started since window_start.
CREATE TABLE rate_keys (
  key          text PRIMARY KEY,
  window_start timestamptz NOT NULL,
  count        integer NOT NULL
);

-- A row per singleton key, whose lock serialises the key's admissions.
CREATE TABLE singleton_keys (
  key text PRIMARY KEY
);

-- The limit of each concurrency key, as the function that last keyed a
-- run of it declared it; its row lock serialises the grants of the key.
CREATE TABLE concurrency_keys (
  key text PRIMARY KEY,
  lim integer NOT NULL
);

-- Each throttle key's generic cell rate: a start every emission_ms, up to
-- tolerance_ms ahead of schedule (limit + burst at once); tat is the
-- theoretical arrival time of the next start.
CREATE TABLE throttle_keys (
  key          text PRIMARY KEY,
  emission_ms  float8 NOT NULL,
  tolerance_ms float8 NOT NULL,
  tat          timestamptz
);

-- The channel the schedulers listen on for slot changes, one per schema.
CREATE FUNCTION slot_channel() RETURNS text LANGUAGE sql STABLE AS $$
  SELECT left('stepwise_slots_' || current_schema(), 63)
$$;

-- Set at registration on the triggers of a function whose runs go through
-- the slot keeper: the scheduler's statement for events creates their runs
-- 'unkeyed' at once.
ALTER TABLE function_triggers ADD COLUMN flow boolean NOT NULL DEFAULT false;

-- A new run of a function with flow control waits for its keys, whatever
-- statement created it (one that did not set its slot gets it here), and
-- the schedulers are told. One execution per statement.
CREATE FUNCTION unkey_runs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE runs SET slot = 'unkeyed'
  FROM created c JOIN function_run_rules f ON f.app_id = c.app_id AND f.function_id = c.function_id
    AND (f.concurrency <> '[]' OR f.throttle IS NOT NULL OR f.priority IS NOT NULL OR f.admission IS NOT NULL)
  WHERE runs.id = c.id AND c.slot IS NULL;
  IF FOUND OR EXISTS (SELECT 1 FROM created c WHERE c.slot = 'unkeyed') THEN
    PERFORM pg_notify(slot_channel(), 'keys');
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER runs_unkeyed AFTER INSERT ON runs REFERENCING NEW TABLE AS created
  FOR EACH STATEMENT EXECUTE FUNCTION unkey_runs();

-- Moves a run's slot with its status, whatever statement changes it: a
-- run that stops running (WAITING, or ended) gives its slot back; one
-- woken from WAITING waits for a slot again when it has concurrency keys
-- (a throttle only limits first starts); one handed back to the queue
-- keeps its slot. Each change tells the schedulers.
CREATE FUNCTION move_run_slot() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.status IN ('WAITING', 'COMPLETED', 'FAILED', 'CANCELLED', 'SKIPPED') THEN
    NEW.slot := 'idle';
  ELSIF NEW.status = 'QUEUED' AND OLD.status = 'WAITING' THEN
    NEW.slot := CASE WHEN NEW.ckey1 IS NULL THEN 'granted' ELSE 'waiting' END;
  END IF;
  IF NEW.slot IS DISTINCT FROM OLD.slot THEN
    PERFORM pg_notify(slot_channel(), 'slots');
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER runs_move_slot BEFORE UPDATE OF status ON runs
  FOR EACH ROW WHEN (OLD.slot IS NOT NULL AND OLD.status IS DISTINCT FROM NEW.status
    AND NEW.status <> 'RUNNING' AND NOT (OLD.status = 'RUNNING' AND NEW.status = 'QUEUED'))
  EXECUTE FUNCTION move_run_slot();

-- Decides whether unkeyed runs start at all, in the order given: a run
-- is SKIPPED (error RunSkipped, the reason) when a run took its
-- idempotency key less than 24 hours ago, when its rate limit's window is
-- full, or when a run of its singleton key has not ended and the mode is
-- 'skip'; otherwise it takes the key, counts in the window, and holds the
-- singleton key (mode 'cancel': the runs of the key that have not ended
-- are returned, to be cancelled). Each key is locked before it is read, in
-- statements of their own, which see what committed before the lock.
-- decisions: [{id, ik, rk, rl, rp, sk, sm}] (idempotency key; rate key,
-- limit, period ms; singleton key, mode).
CREATE FUNCTION admit_runs(decisions jsonb)
RETURNS TABLE (admitted_id uuid, skipped boolean, reason text, event_id text, to_cancel uuid[])
LANGUAGE plpgsql AS $$
DECLARE
  d record;
  taken record;
  win record;
  others uuid[];
  why text;
BEGIN
  FOR d IN
    SELECT * FROM jsonb_to_recordset(decisions) AS x(id uuid, ik text, rk text, rl integer, rp float8, sk text, sm text)
  LOOP
    PERFORM 1 FROM runs r WHERE r.id = d.id AND r.status = 'QUEUED' AND r.slot = 'unkeyed' FOR UPDATE;
    CONTINUE WHEN NOT FOUND;
    why := NULL;
    others := NULL;
    IF d.ik IS NOT NULL THEN
      INSERT INTO idempotency_keys AS k (key, run_id, expires_at) VALUES (d.ik, d.id, now() + interval '24 hours')
      ON CONFLICT (key) DO NOTHING;
      SELECT k.run_id, k.expires_at INTO taken FROM idempotency_keys k WHERE k.key = d.ik FOR UPDATE;
      IF taken.run_id <> d.id AND taken.expires_at > now() THEN
        why := 'idempotency: run ' || taken.run_id || ' took the key in the last 24 hours';
      END IF;
    END IF;
    IF why IS NULL AND d.rk IS NOT NULL THEN
      INSERT INTO rate_keys AS k (key, window_start, count) VALUES (d.rk, now(), 0) ON CONFLICT (key) DO NOTHING;
      SELECT k.window_start, k.count INTO win FROM rate_keys k WHERE k.key = d.rk FOR UPDATE;
      IF win.window_start + d.rp * interval '1 millisecond' > now() AND win.count >= d.rl THEN
        why := 'rateLimit: ' || d.rl || ' runs already started in the window that began at '
          || to_char(win.window_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"');
      END IF;
    END IF;
    IF why IS NULL AND d.sk IS NOT NULL THEN
      INSERT INTO singleton_keys (key) VALUES (d.sk) ON CONFLICT (key) DO NOTHING;
      PERFORM 1 FROM singleton_keys k WHERE k.key = d.sk FOR UPDATE;
      SELECT array_agg(r.id ORDER BY r.created_at) INTO others FROM runs r
      WHERE r.skey = d.sk AND r.status IN ('QUEUED', 'RUNNING', 'WAITING') AND r.id <> d.id;
      IF others IS NOT NULL AND d.sm = 'skip' THEN
        why := 'singleton: run ' || others[1] || ' of the same key has not ended';
      END IF;
    END IF;
    IF why IS NOT NULL THEN
      DELETE FROM idempotency_keys k WHERE k.key = d.ik AND k.run_id = d.id;
      RETURN QUERY
        UPDATE runs SET status = 'SKIPPED', ended_at = now(), lease_expires_at = NULL,
          error = jsonb_build_object('name', 'RunSkipped', 'message', why, 'nonRetriable', true)
        WHERE runs.id = d.id
        RETURNING runs.id, true, why, runs.event_id, NULL::uuid[];
    ELSE
      IF d.ik IS NOT NULL THEN
        UPDATE idempotency_keys k SET run_id = d.id, expires_at = now() + interval '24 hours'
        WHERE k.key = d.ik AND k.run_id <> d.id;
      END IF;
      IF d.rk IS NOT NULL THEN
        UPDATE rate_keys k SET
          count = CASE WHEN k.window_start + d.rp * interval '1 millisecond' <= now() THEN 1 ELSE k.count + 1 END,
          window_start = CASE WHEN k.window_start + d.rp * interval '1 millisecond' <= now() THEN now() ELSE k.window_start END
        WHERE k.key = d.rk;
      END IF;
      -- Admitted once: another scheduler keying the same run does not decide again.
      UPDATE runs SET slot = 'admitted', skey = d.sk WHERE runs.id = d.id;
      RETURN QUERY SELECT d.id, false, NULL::text, NULL::text, CASE WHEN d.sm = 'cancel' THEN others END;
    END IF;
  END LOOP;
END $$;

-- Lets waiting runs start, up to max_runs, and returns them (their work is
-- to be published; they get a publish deadline until it is confirmed),
-- then one row with granted_id NULL and retry_in_ms: when a throttle next
-- lets a waiting run start (NULL: none waits on one).
--
-- Each concurrency key and throttle key with waiting runs is locked (SKIP
-- LOCKED: another scheduler is granting it); the slots a concurrency key's
-- runs hold are then counted in statements of their own, which see what
-- committed before the lock. The runs of a key start in queue order
-- (queued_at: creation time, earlier by priority), found by their first
-- concurrency key, or by their throttle key when they have none; a run
-- starts only when each of its keys lets it.
CREATE FUNCTION grant_run_slots(max_runs integer, deadline_ms float8)
RETURNS TABLE (granted_id uuid, granted_app_id text, granted_function_id text, granted_lease integer, retry_in_ms float8)
LANGUAGE plpgsql AS $$
DECLARE
  k record;
  w record;
  room jsonb := '{}';
  gcra jsonb := '{}';
  now_ms float8 := extract(epoch FROM clock_timestamp()) * 1000;
  n integer := 0;
  seen integer;
  tat float8;
  retry float8;
BEGIN
  FOR k IN
    -- The keys of the waiting runs, from the indexes of waiting runs only.
    SELECT c.key, c.lim FROM concurrency_keys c
    WHERE c.key IN (SELECT r.ckey1 FROM runs r WHERE r.slot = 'waiting'
                    UNION SELECT r.ckey2 FROM runs r WHERE r.slot = 'waiting' AND r.ckey2 IS NOT NULL)
    ORDER BY c.key FOR UPDATE OF c SKIP LOCKED
  LOOP
    room := room || jsonb_build_object(k.key, k.lim - (
      SELECT count(*) FROM runs r WHERE r.slot = 'granted' AND (r.ckey1 = k.key OR r.ckey2 = k.key)));
  END LOOP;
  FOR k IN
    SELECT t.key, t.emission_ms, t.tolerance_ms, t.tat FROM throttle_keys t
    WHERE t.key IN (SELECT r.tkey FROM runs r WHERE r.slot = 'waiting' AND r.tkey IS NOT NULL)
    ORDER BY t.key FOR UPDATE OF t SKIP LOCKED
  LOOP
    gcra := gcra || jsonb_build_object(k.key, jsonb_build_array(
      coalesce(extract(epoch FROM k.tat) * 1000, now_ms), k.emission_ms, k.tolerance_ms));
  END LOOP;
  FOR k IN
    SELECT x.key, true AS concurrent FROM jsonb_object_keys(room) AS x(key)
    UNION ALL
    SELECT x.key, false FROM jsonb_object_keys(gcra) AS x(key)
    ORDER BY 2 DESC, 1
  LOOP
    EXIT WHEN n >= max_runs;
    seen := 0;
    FOR w IN
      SELECT r.id, r.ckey1, r.ckey2, r.tkey FROM runs r
      WHERE r.slot = 'waiting' AND ((k.concurrent AND r.ckey1 = k.key) OR (NOT k.concurrent AND r.tkey = k.key AND r.ckey1 IS NULL))
      ORDER BY r.queued_at, r.id FOR UPDATE OF r SKIP LOCKED
    LOOP
      EXIT WHEN n >= max_runs OR seen >= 1000 OR (k.concurrent AND (room->>k.key)::int <= 0);
      seen := seen + 1;
      CONTINUE WHEN w.ckey1 IS NOT NULL AND coalesce((room->>w.ckey1)::int, 0) <= 0;
      CONTINUE WHEN w.ckey2 IS NOT NULL AND coalesce((room->>w.ckey2)::int, 0) <= 0;
      IF w.tkey IS NOT NULL THEN
        CONTINUE WHEN NOT gcra ? w.tkey;
        tat := (gcra->w.tkey->>0)::float8;
        -- The throttle's next start is later: this key waits for it.
        EXIT WHEN NOT k.concurrent AND tat - (gcra->w.tkey->>2)::float8 > now_ms;
        CONTINUE WHEN tat - (gcra->w.tkey->>2)::float8 > now_ms;
      END IF;
      RETURN QUERY
        UPDATE runs SET slot = 'granted', lease_expires_at = now() + deadline_ms * interval '1 millisecond'
        WHERE runs.id = w.id AND runs.slot = 'waiting' AND runs.status = 'QUEUED'
        RETURNING runs.id, runs.app_id, runs.function_id, runs.lease, NULL::float8;
      IF FOUND THEN
        n := n + 1;
        IF w.ckey1 IS NOT NULL THEN
          room := jsonb_set(room, ARRAY[w.ckey1], to_jsonb((room->>w.ckey1)::int - 1));
        END IF;
        IF w.ckey2 IS NOT NULL THEN
          room := jsonb_set(room, ARRAY[w.ckey2], to_jsonb((room->>w.ckey2)::int - 1));
        END IF;
        IF w.tkey IS NOT NULL THEN
          gcra := jsonb_set(gcra, ARRAY[w.tkey, '0'], to_jsonb(greatest(tat, now_ms) + (gcra->w.tkey->>1)::float8));
        END IF;
      END IF;
    END LOOP;
  END LOOP;
  UPDATE throttle_keys t SET tat = to_timestamp((gcra->t.key->>0)::float8 / 1000.0)
  WHERE gcra ? t.key;
  SELECT min((g.v->>0)::float8 - (g.v->>2)::float8 - now_ms) INTO retry
  FROM jsonb_each(gcra) AS g(key, v)
  WHERE EXISTS (SELECT 1 FROM runs r WHERE r.slot = 'waiting' AND r.tkey = g.key);
  RETURN QUERY SELECT NULL::uuid, NULL::text, NULL::text, NULL::integer,
    CASE WHEN retry IS NULL THEN NULL ELSE greatest(retry, 0) END;
END $$;
`,
};
