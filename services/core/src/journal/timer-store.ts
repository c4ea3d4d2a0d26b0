import { INVOKE_TIMEOUT_ERROR } from "./invocations.js";
import { CRON_TICK_RUNS } from "./run-creation.js";
import type { Sql } from "./sql.js";
import { DEFAULT_TIMER_CHANNEL, type PublishedRunRef } from "./types.js";

/** One thing a suspending run waits for, keyed by its step. */
export type AwaitRecord =
  | { stepKey: string; stepId: string; kind: "sleep" | "retry"; dueAtMs: number }
  | {
      stepKey: string;
      stepId: string;
      kind: "wait";
      /** The wait's timeout. */
      dueAtMs: number;
      event: string;
      /** CEL over `event` (the run's) and `async` (the candidate); null for any event of the name. */
      condition: string | null;
      /** The condition's indexable equality, when it has one. */
      equality: { eventPath: string[]; asyncPath: string[] } | undefined;
    }
  | {
      stepKey: string;
      stepId: string;
      kind: "invoke";
      /** The step's timeout; null for none. */
      dueAtMs: number | null;
      /** The function to run (see invocations.ts). */
      appId: string;
      functionId: string;
      /** Data of the child's event: a JSON object, as JSON text. */
      dataJson: string;
    };

/** The outcome of a suspension. */
export type SuspendOutcome =
  | { kind: "lease-lost" }
  /** The run waits; `hasWaits` when some of its awaits are events, for the lookback. */
  | { kind: "waiting"; hasWaits: boolean }
  /** Something it waits for already happened: the run is QUEUED again, publish its work. */
  | { kind: "resumed"; run: PublishedRunRef };

/** A cron tick to fire, as read under lock. */
export interface DueCron {
  appId: string;
  functionId: string;
  triggerIndex: number;
  cron: string;
  timezone: string;
  tickMs: number;
}

/**
 * How far ahead of now a new timer makes a suspension notify the
 * schedulers: they re-read their next wake-up at least this often anyway.
 */
export const TIMER_POLL_MS = 1_000;

/** A run a due timer woke, QUEUED again. */
export interface FiredRun extends PublishedRunRef {
  /** How late its earliest due timer fired, in ms, by the database's clock. */
  lateMs: number;
}

/** Longest wait key value that is indexed; a longer one makes the wait unindexed. */
const MAX_KEY_LENGTH = 512;

/**
 * TimerStore holds the SQL of suspended runs: recording what a run waits
 * for, firing due timers and cron ticks, and telling schedulers when to
 * look next. Several schedulers share the firing (SKIP LOCKED).
 */
export class TimerStore {
  readonly channel: string;

  constructor(
    private readonly sql: Sql,
    options: { channel?: string } = {},
  ) {
    this.channel = options.channel ?? DEFAULT_TIMER_CHANNEL;
  }

  /**
   * Suspends a run this execution holds: replaces its timers and waits by
   * the awaits given (one that already existed keeps its due time and start,
   * so a replayed `sleep("1h")` does not start over), and sets it WAITING
   * with no lease. An invoke await gets a timer at its timeout, if it has
   * one and its step is not journaled yet; its child is started before, by
   * startInvocations. When one of the awaited steps is already journaled, or a
   * wake-up raced with this suspension (the run's wake count moved since
   * `wakes`), the run is QUEUED again instead. Notifies the schedulers when
   * a timer of the run is due within TIMER_POLL_MS. One statement, one
   * round trip; it locks the run row, which every wake-up updates too.
   */
  async suspend(
    runId: string,
    lease: number,
    wakes: number,
    awaits: readonly AwaitRecord[],
    requeueAfterMs: number,
  ): Promise<SuspendOutcome> {
    const rows = await this.sql.query<{
      status: string;
      id: string;
      app_id: string;
      function_id: string;
      lease: number;
      notified: number | string;
    }>(
      `WITH held AS (
         SELECT id, event_id, created_at FROM runs
         WHERE id = $1 AND lease = $2 AND status = 'RUNNING' FOR UPDATE
       ), a AS (
         SELECT * FROM jsonb_to_recordset($3::jsonb)
           AS a(k text, i text, kind text, due float8, ev text, cond text, ep text, ap text)
       ), dt AS (
         DELETE FROM timers t WHERE t.run_id IN (SELECT id FROM held) AND t.step_key NOT IN (SELECT k FROM a)
       ), dw AS (
         DELETE FROM waits w WHERE w.run_id IN (SELECT id FROM held) AND w.step_key NOT IN (SELECT k FROM a)
       ), it AS (
         INSERT INTO timers (run_id, step_key, step_id, kind, due_at)
         SELECT held.id, a.k, a.i, a.kind, to_timestamp(a.due / 1000.0) FROM a, held
         WHERE a.due IS NOT NULL
           -- An invoked run that ended already (or a function not found)
           -- journaled the step: it needs no timeout.
           AND (a.kind <> 'invoke' OR NOT EXISTS (SELECT 1 FROM steps s WHERE s.run_id = held.id AND s.step_key = a.k))
         ON CONFLICT (run_id, step_key) DO NOTHING
       ), since AS (
         -- From the commit of the step before the last one: an event caused by
         -- the last step (a webhook it triggered) may be stored before that
         -- step's own result is, and must not be missed.
         -- After a sleep or a resolved wait (journaled by the engine), from
         -- that commit: an event it consumed, or one from during the sleep,
         -- does not count.
         SELECT CASE WHEN (SELECT kind FROM steps WHERE run_id = $1 ORDER BY journaled_at DESC, seq DESC LIMIT 1) IS NOT NULL
           THEN (SELECT max(journaled_at) FROM steps WHERE run_id = $1)
           ELSE coalesce(
             (SELECT journaled_at FROM steps WHERE run_id = $1 ORDER BY journaled_at DESC, seq DESC OFFSET 1 LIMIT 1),
             (SELECT created_at FROM held)) END AS t
       ), src AS (
         SELECT jsonb_build_object('id', e.id, 'name', e.name, 'data', e.data) AS doc
         FROM held JOIN events e ON e.id = held.event_id
       ), iw AS (
         INSERT INTO waits (run_id, step_key, step_id, event_name, key_path, key_value, condition, since)
         SELECT $1, a.k, a.i, a.ev,
           -- Indexed only for a string of reasonable length: a btree row has a size limit.
           CASE WHEN jsonb_typeof(src.doc #> string_to_array(a.ep, '.')) = 'string'
             AND length(src.doc #>> string_to_array(a.ep, '.')) <= ${MAX_KEY_LENGTH} THEN a.ap ELSE '' END,
           CASE WHEN jsonb_typeof(src.doc #> string_to_array(a.ep, '.')) = 'string'
             AND length(src.doc #>> string_to_array(a.ep, '.')) <= ${MAX_KEY_LENGTH}
             THEN src.doc #>> string_to_array(a.ep, '.') ELSE '' END,
           a.cond, (SELECT t FROM since)
         FROM a, src WHERE a.kind = 'wait'
         ON CONFLICT (run_id, step_key) DO NOTHING
         RETURNING event_name, key_path
       ), ip AS (
         INSERT INTO wait_paths (event_name, key_path)
         SELECT DISTINCT event_name, key_path FROM iw WHERE key_path <> ''
         ON CONFLICT DO NOTHING
       ), resume AS (
         SELECT EXISTS (SELECT 1 FROM steps s WHERE s.run_id = $1 AND s.step_key IN (SELECT k FROM a)) AS now
       ), upd AS (
         UPDATE runs SET
           status = CASE WHEN runs.wakes <> $4 OR (SELECT now FROM resume) THEN 'QUEUED' ELSE 'WAITING' END,
           executor_id = NULL,
           lease_expires_at = CASE WHEN runs.wakes <> $4 OR (SELECT now FROM resume)
             THEN now() + $5 * interval '1 millisecond' ELSE NULL END
         WHERE id IN (SELECT id FROM held)
         RETURNING status, id, app_id, function_id, lease
       ), soon AS (
         SELECT pg_notify($6, 'timer') FROM (SELECT 1) one
         WHERE EXISTS (SELECT 1 FROM held)
           AND (EXISTS (SELECT 1 FROM a WHERE a.due < extract(epoch FROM now()) * 1000 + $7)
             OR EXISTS (SELECT 1 FROM timers t WHERE t.run_id = $1 AND t.due_at < now() + $7 * interval '1 millisecond'))
       )
       SELECT upd.*, (SELECT count(*) FROM soon) AS notified FROM upd
       UNION ALL
       -- Not held any more but WAITING under this lease: this suspension was
       -- already recorded (a retry after a lost reply). Say so, so the
       -- caller still looks back for events.
       SELECT r.status, r.id, r.app_id, r.function_id, r.lease, 0 FROM runs r
       WHERE r.id = $1 AND r.lease = $2 AND r.status = 'WAITING' AND NOT EXISTS (SELECT 1 FROM held)`,
      [
        runId,
        lease,
        JSON.stringify(
          awaits.map((a) => ({
            k: a.stepKey,
            i: a.stepId,
            kind: a.kind,
            due: a.dueAtMs,
            ev: a.kind === "wait" ? a.event : null,
            cond: a.kind === "wait" ? a.condition : null,
            ep: a.kind === "wait" && a.equality ? a.equality.eventPath.join(".") : null,
            ap: a.kind === "wait" && a.equality ? a.equality.asyncPath.join(".") : null,
          })),
        ),
        wakes,
        requeueAfterMs,
        this.channel,
        TIMER_POLL_MS,
      ],
    );
    const r = rows[0];
    if (!r) return { kind: "lease-lost" };
    if (r.status === "QUEUED") {
      return { kind: "resumed", run: { runId: r.id, appId: r.app_id, functionId: r.function_id, lease: Number(r.lease) } };
    }
    return { kind: "waiting", hasWaits: awaits.some((a) => a.kind === "wait") };
  }

  /**
   * Fires up to `limit` due timers of WAITING runs: a sleep journals its
   * step with a null result, a wait's timeout journals null and drops the
   * wait, an invoke's timeout journals a non-retriable InvokeTimeout error
   * (the invoked run keeps running, and its end finds the step journaled),
   * a retry journals nothing; each run is QUEUED again and returned, with
   * the short deadline until markPublished, and how late its earliest
   * timer fired. One round trip.
   */
  async fireDue(limit: number, requeueAfterMs: number): Promise<FiredRun[]> {
    const rows = await this.sql.query<{ id: string; app_id: string; function_id: string; lease: number; late_ms: number | string | null }>(
      `WITH due AS (
         -- Timers in due order, each run looked up by id: a join would let
         -- a plan cached while runs was small scan it whole as it grows.
         SELECT t.run_id, t.step_key FROM timers t
         WHERE t.due_at <= now()
           AND EXISTS (SELECT 1 FROM runs r WHERE r.id = t.run_id AND r.status = 'WAITING' OFFSET 0)
         ORDER BY t.due_at LIMIT $1 FOR UPDATE OF t SKIP LOCKED
       ), f AS (
         DELETE FROM timers t USING due WHERE t.run_id = due.run_id AND t.step_key = due.step_key
         RETURNING t.run_id, t.step_key, t.step_id, t.kind, t.due_at
       ), w AS (
         DELETE FROM waits w USING f WHERE f.kind = 'wait' AND w.run_id = f.run_id AND w.step_key = f.step_key
         RETURNING w.run_id, w.step_key
       ), j AS (
         INSERT INTO steps (run_id, step_key, step_id, attempt, started_at, ended_at, output, error, kind)
         SELECT f.run_id, f.step_key, f.step_id, 1, f.due_at, now(),
           CASE WHEN f.kind <> 'invoke' THEN 'null'::jsonb END,
           CASE WHEN f.kind = 'invoke' THEN ${INVOKE_TIMEOUT_ERROR("f")} END,
           f.kind FROM f
         WHERE f.kind IN ('sleep', 'invoke') OR EXISTS (SELECT 1 FROM w WHERE w.run_id = f.run_id AND w.step_key = f.step_key)
         ON CONFLICT (run_id, step_key) DO NOTHING
       )
       ${WOKEN_RUNS("SELECT run_id FROM f")}
       SELECT id, app_id, function_id, lease,
         (SELECT extract(epoch FROM now() - min(f.due_at)) * 1000 FROM f WHERE f.run_id = woken.id)::float8 AS late_ms
       FROM woken WHERE status = 'QUEUED'`,
      [limit, requeueAfterMs],
    );
    return rows.map((r) => ({ runId: r.id, appId: r.app_id, functionId: r.function_id, lease: Number(r.lease), lateMs: Number(r.late_ms ?? 0) }));
  }

  /**
   * Milliseconds until the next timer of a WAITING run, cron tick, run
   * deadline (run-deadlines.ts) or event window (event-windows.ts) is due,
   * by the database's clock (0 when one is due already: it became due after
   * the last fireDue, or another scheduler holds it), or null when there is
   * none. One round trip.
   */
  async nextDueInMs(): Promise<number | null> {
    const rows = await this.sql.query<{ ms: number | string | null }>(
      `SELECT (extract(epoch FROM least(
           (SELECT t.due_at FROM timers t
            WHERE EXISTS (SELECT 1 FROM runs r WHERE r.id = t.run_id AND r.status = 'WAITING' OFFSET 0)
            ORDER BY t.due_at LIMIT 1),
           (SELECT min(next_at) FROM cron_schedules WHERE isfinite(next_at)),
           (SELECT min(due_at) FROM run_deadlines WHERE isfinite(due_at)),
           (SELECT min(due_at) FROM event_windows)) - now()) * 1000)::float8 AS ms`,
    );
    const ms = rows[0]?.ms;
    return ms === null || ms === undefined ? null : Math.max(0, Number(ms));
  }

  /**
   * Fires due cron ticks, each exactly once across schedulers: under a
   * transaction, locks up to `limit` due schedules (SKIP LOCKED), creates
   * one run per tick (its event id names the tick, so even a replayed
   * transaction cannot make a second), and moves each schedule to the tick
   * `next` computes. Missed ticks are not made up: the next tick is the
   * first after now. Returns the runs to publish (short deadline until
   * markPublished).
   */
  async fireCron(
    limit: number,
    requeueAfterMs: number,
    next: (due: DueCron, nowMs: number) => Date | null,
  ): Promise<PublishedRunRef[]> {
    return this.sql.transaction(async (tx) => {
      const due = await tx.query<{
        app_id: string;
        function_id: string;
        trigger_index: number;
        cron: string;
        timezone: string;
        tick_ms: number | string;
        now_ms: number | string;
      }>(
        `SELECT app_id, function_id, trigger_index, cron, timezone,
           (extract(epoch FROM next_at) * 1000)::float8 AS tick_ms, (extract(epoch FROM now()) * 1000)::float8 AS now_ms
         FROM cron_schedules WHERE next_at <= now()
         ORDER BY next_at LIMIT $1 FOR UPDATE SKIP LOCKED`,
        [limit],
      );
      if (due.length === 0) return [];
      const ticks = due.map((d) => {
        const c: DueCron = {
          appId: d.app_id,
          functionId: d.function_id,
          triggerIndex: Number(d.trigger_index),
          cron: d.cron,
          timezone: d.timezone,
          tickMs: Number(d.tick_ms),
        };
        const following = next(c, Number(d.now_ms));
        const tick = new Date(c.tickMs).toISOString();
        return {
          a: c.appId,
          f: c.functionId,
          x: c.triggerIndex,
          id: `stepwise-cron-${c.appId}-${c.functionId}-${c.triggerIndex}-${c.tickMs}`,
          data: { cron: c.cron, timezone: c.timezone, tick },
          tick,
          next: following ? following.toISOString() : "infinity",
        };
      });
      const rows = await tx.query<{ id: string; app_id: string; function_id: string; lease: number }>(
        `WITH x AS (
           SELECT * FROM jsonb_to_recordset($1::jsonb) AS x(a text, f text, x int, id text, data jsonb, tick timestamptz, next timestamptz)
         ), ev AS (
           INSERT INTO events (id, name, data, ts, received_at)
           SELECT x.id, 'stepwise/cron', x.data, x.tick, now() FROM x
           ON CONFLICT (id) DO NOTHING
         ), moved AS (
           UPDATE cron_schedules c SET next_at = x.next FROM x
           WHERE c.app_id = x.a AND c.function_id = x.f AND c.trigger_index = x.x
         )
         ${CRON_TICK_RUNS("$2")}`,
        [JSON.stringify(ticks), requeueAfterMs],
      );
      return rows.map((r) => ({ runId: r.id, appId: r.app_id, functionId: r.function_id, lease: Number(r.lease) }));
    });
  }
}

/**
 * The tail of a statement that wakes runs (`ids` selects their ids): bumps
 * their wake count (which a racing suspension sees, since it locks the same
 * row) and QUEUEs those that were WAITING, returning them. A run still
 * RUNNING keeps running; its next suspension resumes at once.
 */
export function WAKE_RUNS(ids: string, requeueParam = "$2"): string {
  return `${WOKEN_RUNS(ids, requeueParam)}
       SELECT id, app_id, function_id, lease FROM woken WHERE status = 'QUEUED'`;
}

/**
 * WAKE_RUNS without its final SELECT, for a statement that returns more:
 * `woken` holds the runs woken (id, app_id, function_id, lease, status),
 * those with status QUEUED to publish.
 */
export function WOKEN_RUNS(ids: string, requeueParam = "$2"): string {
  // The runs are locked in id order, as every statement that changes
  // several runs does (see claimRuns in run-leases.ts).
  return `, wake_lock AS (
         SELECT id FROM runs WHERE id IN (${ids}) AND status IN ('WAITING', 'RUNNING', 'QUEUED')
         ORDER BY id FOR UPDATE
       ), woken AS (
         UPDATE runs SET wakes = wakes + 1,
           status = CASE WHEN status = 'WAITING' THEN 'QUEUED' ELSE status END,
           lease_expires_at = CASE WHEN status = 'WAITING'
             THEN now() + ${requeueParam} * interval '1 millisecond' ELSE lease_expires_at END
         WHERE id IN (SELECT id FROM wake_lock)
         RETURNING id, app_id, function_id, lease, status
       )`;
}
