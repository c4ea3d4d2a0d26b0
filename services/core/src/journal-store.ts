import type {
  AttemptRecord,
  ClaimedRun,
  EventInput,
  FunctionRegistration,
  JournalOutcome,
  PublishedRun,
  PublishedRunRef,
  RecordedEvent,
  RunFilter,
  RunView,
  StepRecord,
  StoredError,
} from "./journal-types.js";
import { DEFAULT_QUEUED_BACKSTOP_MS, DEFAULT_TIMER_CHANNEL } from "./journal-types.js";
import { listRuns, listRunsOfEvents, readRun } from "./run-views.js";
import type { Sql } from "./sql.js";

export * from "./journal-types.js";

/**
 * JournalStore holds every SQL statement of the engine. Each method is one
 * round trip to Postgres unless its comment says otherwise; it runs on
 * Postgres and on PGlite alike.
 */
export class JournalStore {
  /** The LISTEN/NOTIFY channel that wakes schedulers when timers or schedules change. */
  readonly timerChannel: string;

  constructor(
    private readonly sql: Sql,
    options: { timerChannel?: string } = {},
  ) {
    this.timerChannel = options.timerChannel ?? DEFAULT_TIMER_CHANNEL;
  }

  /**
   * Upserts an app's functions and replaces their triggers, in one
   * transaction. A cron trigger whose schedule did not change keeps its next
   * tick, so a worker reconnecting neither skips nor repeats one.
   */
  async registerFunctions(appId: string, functions: FunctionRegistration[]): Promise<void> {
    const sorted = [...functions].sort((a, b) => a.id.localeCompare(b.id));
    await this.sql.transaction(async (tx) => {
      // The cron schedules of functions this app no longer registers stop
      // firing: their runs would wait for a worker that never comes.
      await tx.query("DELETE FROM cron_schedules WHERE app_id = $1 AND NOT (function_id = ANY($2::text[]))", [
        appId,
        sorted.map((f) => f.id),
      ]);
      for (const fn of sorted) {
        await tx.query(
          `INSERT INTO functions (app_id, function_id, name, config, updated_at)
           VALUES ($1, $2, $3, $4::jsonb, now())
           ON CONFLICT (app_id, function_id) DO UPDATE
             SET name = excluded.name, config = excluded.config, updated_at = now()`,
          [appId, fn.id, fn.name, JSON.stringify(fn.config ?? {})],
        );
        await tx.query("DELETE FROM function_triggers WHERE app_id = $1 AND function_id = $2", [appId, fn.id]);
        // Per event name: NULL conditions when any trigger of the name has
        // none, else every condition (any one true starts a run).
        const byName = new Map<string, string[] | null>();
        for (const name of fn.eventTriggers) byName.set(name, null);
        for (const t of fn.conditionalTriggers ?? []) {
          const had = byName.get(t.event);
          if (had === null) continue;
          byName.set(t.event, [...(had ?? []), t.condition]);
        }
        if (byName.size > 0) {
          await tx.query(
            `INSERT INTO function_triggers (event_name, app_id, function_id, conditions)
             SELECT x.n, $2, $3, CASE WHEN x.c IS NULL THEN NULL ELSE ARRAY(SELECT jsonb_array_elements_text(x.c)) END
             FROM jsonb_to_recordset($1::jsonb) AS x(n text, c jsonb)`,
            [JSON.stringify([...byName].map(([n, c]) => ({ n, c }))), appId, fn.id],
          );
        }
        const crons = fn.cronTriggers ?? [];
        await tx.query("DELETE FROM cron_schedules WHERE app_id = $1 AND function_id = $2 AND trigger_index >= $3", [
          appId,
          fn.id,
          crons.length,
        ]);
        for (const [i, c] of crons.entries()) {
          await tx.query(
            `INSERT INTO cron_schedules (app_id, function_id, trigger_index, cron, timezone, next_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (app_id, function_id, trigger_index) DO UPDATE
               SET cron = excluded.cron, timezone = excluded.timezone,
                   next_at = CASE WHEN cron_schedules.cron = excluded.cron AND cron_schedules.timezone = excluded.timezone
                             THEN cron_schedules.next_at ELSE excluded.next_at END`,
            [appId, fn.id, i, c.cron, c.timezone, c.firstAt],
          );
        }
        if (crons.length > 0) await tx.query("SELECT pg_notify($1, 'cron')", [this.timerChannel]);
      }
    });
  }

  /**
   * Stores an event and creates one QUEUED run per function it triggers
   * without a condition; returns those runs. See recordEventMatching.
   */
  async recordEvent(ev: EventInput, backstopMs = DEFAULT_QUEUED_BACKSTOP_MS): Promise<PublishedRunRef[]> {
    return (await this.recordEventMatching(ev, backstopMs)).runs;
  }

  /**
   * Stores an event and creates one QUEUED run per function it triggers
   * without a condition, idempotently: a second call for the same event id
   * creates nothing and returns the runs that are still QUEUED, so a
   * redelivered event gets its work published again. Until their work is
   * published the event stays unacknowledged, and its redelivery is what
   * re-publishes; the new runs only get the long backstop deadline. The
   * triggers with conditions are returned for the caller to evaluate, then
   * createRuns. One statement, one round trip.
   */
  async recordEventMatching(ev: EventInput, backstopMs = DEFAULT_QUEUED_BACKSTOP_MS): Promise<RecordedEvent> {
    return (await this.recordEventsMatching([ev], backstopMs))[0] as RecordedEvent;
  }

  /**
   * recordEventMatching for many events in one statement (group commit of
   * the scheduler's concurrent events); one result per event, in order. One
   * round trip.
   */
  async recordEventsMatching(events: readonly EventInput[], backstopMs = DEFAULT_QUEUED_BACKSTOP_MS): Promise<RecordedEvent[]> {
    const rows = await this.sql.query<{
      kind: string;
      event_id: string;
      id: string | null;
      app_id: string | null;
      function_id: string | null;
      lease: number | null;
      conditions: string[] | null;
      stored_ms: number | string | null;
    }>(
      // The lookups of existing rows go by id (LATERAL ... OFFSET 0, a
      // correlated subquery): a join there would let a plan cached while
      // the tables were small (a fresh install) scan them whole as they grow.
      // The events come as one JSON array, not as arrays per column: the
      // planner sizes jsonb_to_recordset the same whatever its argument, so
      // Postgres keeps one generic plan for the statement instead of
      // planning it anew at each execution (it costs about 1 ms here) as it
      // does when unnest's row count follows the array it is given.
      `WITH e AS (
         SELECT DISTINCT ON (id) * FROM jsonb_to_recordset($1::jsonb)
           AS e(id text, name text, data jsonb, ts float8, rcv float8)
       ), ev AS (
         INSERT INTO events (id, name, data, ts, received_at)
         SELECT id, name, data, to_timestamp(ts / 1000.0), to_timestamp(rcv / 1000.0) FROM e
         ON CONFLICT (id) DO NOTHING
         RETURNING id, stored_at
       ), created AS (
         INSERT INTO runs (id, app_id, function_id, event_id, status, lease_expires_at)
         SELECT gen_random_uuid(), t.app_id, t.function_id, e.id, 'QUEUED', now() + $2 * interval '1 millisecond'
         FROM e JOIN function_triggers t ON t.event_name = e.name AND t.conditions IS NULL
         ON CONFLICT (app_id, function_id, event_id) DO NOTHING
         RETURNING id, app_id, function_id, event_id, lease
       )
       SELECT 'run' AS kind, event_id, id::text, app_id, function_id, lease, NULL::text[] AS conditions, NULL::float8 AS stored_ms
       FROM created
       UNION ALL
       SELECT 'run', r.event_id, r.id::text, r.app_id, r.function_id, r.lease, NULL, NULL
       FROM e CROSS JOIN LATERAL (SELECT * FROM runs WHERE event_id = e.id AND status = 'QUEUED' OFFSET 0) r
       UNION ALL
       SELECT 'cond', e.id, NULL, t.app_id, t.function_id, NULL, t.conditions, NULL
       FROM e JOIN function_triggers t ON t.event_name = e.name AND t.conditions IS NOT NULL
       UNION ALL
       SELECT 'stored', e.id, NULL, NULL, NULL, NULL, NULL,
         (extract(epoch FROM coalesce(ev.stored_at, (SELECT old.stored_at FROM events old WHERE old.id = e.id))) * 1000)::float8
       FROM e LEFT JOIN ev ON ev.id = e.id`,
      [eventsDocument(events), backstopMs],
    );
    const out = new Map<string, RecordedEvent>(events.map((e) => [e.id, { runs: [], conditional: [], storedAtMs: 0 }]));
    for (const r of rows) {
      const rec = out.get(r.event_id);
      if (!rec) continue;
      if (r.kind === "run" && r.id !== null) {
        rec.runs.push({ runId: r.id, appId: r.app_id ?? "", functionId: r.function_id ?? "", lease: Number(r.lease) });
      } else if (r.kind === "cond" && r.conditions) {
        rec.conditional.push({ appId: r.app_id ?? "", functionId: r.function_id ?? "", conditions: r.conditions });
      } else if (r.kind === "stored") {
        rec.storedAtMs = Number(r.stored_ms ?? 0);
      }
    }
    // An id sent twice in one batch shares one record; each caller gets its own copy.
    return events.map((e) => {
      const rec = out.get(e.id) as RecordedEvent;
      return { runs: [...rec.runs], conditional: [...rec.conditional], storedAtMs: rec.storedAtMs };
    });
  }

  /**
   * Creates QUEUED runs of an event for functions whose trigger conditions
   * held, idempotently; returns the runs created now or still QUEUED. One
   * round trip.
   */
  async createRuns(
    eventId: string,
    functions: ReadonlyArray<{ appId: string; functionId: string }>,
    backstopMs = DEFAULT_QUEUED_BACKSTOP_MS,
  ): Promise<PublishedRunRef[]> {
    if (functions.length === 0) return [];
    const rows = await this.sql.query<{ id: string; app_id: string; function_id: string; lease: number }>(
      `WITH created AS (
         INSERT INTO runs (id, app_id, function_id, event_id, status, lease_expires_at)
         SELECT gen_random_uuid(), f.app_id, f.function_id, $1, 'QUEUED', now() + $4 * interval '1 millisecond'
         FROM unnest($2::text[], $3::text[]) AS f(app_id, function_id)
         ON CONFLICT (app_id, function_id, event_id) DO NOTHING
         RETURNING id, app_id, function_id, lease
       )
       SELECT id, app_id, function_id, lease FROM created
       UNION ALL
       SELECT r.id, r.app_id, r.function_id, r.lease FROM runs r
       JOIN unnest($2::text[], $3::text[]) AS f(app_id, function_id) ON r.app_id = f.app_id AND r.function_id = f.function_id
       WHERE r.event_id = $1 AND r.status = 'QUEUED'`,
      [eventId, functions.map((f) => f.appId), functions.map((f) => f.functionId), backstopMs],
    );
    return rows.map((r) => ({ runId: r.id, appId: r.app_id, functionId: r.function_id, lease: Number(r.lease) }));
  }

  /**
   * Claims a run for an executor: QUEUED, or RUNNING with a lapsed lease.
   * Bumps the lease (fencing older executions) and returns the event and
   * the journal, or null when the run is not claimable (held elsewhere,
   * finished, unknown). One round trip.
   */
  async claimRun(runId: string, executorId: string, leaseMs: number): Promise<ClaimedRun | null> {
    return (await this.claimRuns([runId], executorId, leaseMs))[0] ?? null;
  }

  /**
   * Claims many runs in one statement, as claimRun does each; the result
   * has one entry per id, in order, null for a run not claimable.
   */
  async claimRuns(runIds: readonly string[], executorId: string, leaseMs: number): Promise<Array<ClaimedRun | null>> {
    const rows = await this.sql.query<ClaimRow>(
      // The rows are locked in id order, as every statement that updates
      // several runs does: two of them locking the same runs in different
      // orders would deadlock, and Postgres only notices after a second.
      `WITH target AS (
         SELECT id FROM runs
         WHERE id = ANY($1::uuid[]) AND (status = 'QUEUED' OR (status = 'RUNNING' AND lease_expires_at < now()))
         ORDER BY id FOR UPDATE
       ), claimed AS (
         UPDATE runs SET status = 'RUNNING', lease = lease + 1, executor_id = $2,
           lease_expires_at = now() + $3 * interval '1 millisecond',
           started_at = coalesce(started_at, now())
         FROM target WHERE runs.id = target.id
         RETURNING runs.id, app_id, function_id, event_id, lease, wakes, created_at, started_at
       )
       SELECT c.id, c.app_id, c.function_id, c.lease, c.wakes, e.id AS event_id, e.name AS event_name,
         e.data::text AS event_data, (extract(epoch FROM e.ts) * 1000)::float8 AS event_ts_ms,
         floor(extract(epoch FROM c.created_at) * 1000)::float8 AS created_at_ms,
         floor(extract(epoch FROM c.started_at) * 1000)::float8 AS started_at_ms,
         (SELECT count(*) FROM runs o WHERE o.event_id = c.event_id)::int AS event_runs,
         -- A first claim (lease 1) has nothing journaled yet: only a
         -- lease holder writes steps and attempts.
         CASE WHEN c.lease = 1 THEN '[]'::json ELSE
           (SELECT coalesce(json_agg(json_build_object('k', s.step_key, 'o', s.output::text, 'e', s.error) ORDER BY s.seq), '[]'::json)
              FROM steps s WHERE s.run_id = c.id) END AS journal,
         CASE WHEN c.lease = 1 THEN '{}'::json ELSE
           (SELECT coalesce(json_object_agg(a.step_key, json_build_object('n', a.n, 'r', a.r)), '{}'::json)
              FROM (SELECT step_key, max(attempt) AS n,
                      (extract(epoch FROM (array_agg(retry_at ORDER BY attempt DESC))[1]) * 1000)::float8 AS r
                    FROM step_attempts WHERE run_id = c.id GROUP BY step_key) a) END AS attempts
       FROM claimed c JOIN events e ON e.id = c.event_id`,
      [runIds, executorId, leaseMs],
    );
    const byId = new Map(rows.map((r) => [r.id, r]));
    // An id given twice (two work messages of one run claimed together)
    // gets its claim once: the other is a duplicate, as a second claimRun
    // would find the run held.
    return runIds.map((id) => {
      const r = byId.get(id);
      byId.delete(id);
      return r ? toClaimedRun(r) : null;
    });
  }

  /**
   * Journals a step result if this execution still holds the run (lease and
   * status match) and the step has no result yet. One round trip when it is
   * written, two when it is not.
   *
   * The lease check takes no row lock, on purpose (it would add a row-lock
   * write to every step): an insert whose snapshot predates a takeover may
   * still commit. That execution was presumed dead; the one that took over
   * finds the key journaled (first write wins) and continues with that
   * value, and the stale one is refused at its next step.
   */
  async journalStep(s: StepRecord): Promise<JournalOutcome> {
    const written = await this.sql.query(
      `INSERT INTO steps (run_id, step_key, step_id, attempt, started_at, ended_at, output, error)
       SELECT $1, $2, $3, $4, to_timestamp($5 / 1000.0), to_timestamp($6 / 1000.0), $7::jsonb, $8::jsonb
       WHERE EXISTS (SELECT 1 FROM runs WHERE id = $1 AND lease = $9 AND status = 'RUNNING')
       ON CONFLICT (run_id, step_key) DO NOTHING
       RETURNING seq`,
      [
        s.runId,
        s.stepKey,
        s.stepId,
        s.attempt,
        s.startedAtMs,
        s.endedAtMs,
        s.error ? null : (s.outputJson ?? "null"),
        s.error ? JSON.stringify(s.error) : null,
        s.lease,
      ],
    );
    if (written.length > 0) return { kind: "journaled" };
    return this.stepOutcome(s);
  }

  /** Why a step result was not written: the journal's result, or the lease was lost. One round trip. */
  private async stepOutcome(s: StepRecord): Promise<JournalOutcome> {
    const rows = await this.sql.query<{ held: boolean | null; o: string | null; e: StoredError | null; found: boolean }>(
      `SELECT (SELECT lease = $3 AND status = 'RUNNING' FROM runs WHERE id = $1) AS held,
              s.output::text AS o, s.error AS e, s.run_id IS NOT NULL AS found
       FROM (SELECT 1) one LEFT JOIN steps s ON s.run_id = $1 AND s.step_key = $2`,
      [s.runId, s.stepKey, s.lease],
    );
    const r = rows[0];
    if (!r || !r.held) return { kind: "lease-lost" };
    if (!r.found) return { kind: "lease-lost" };
    return {
      kind: "existing",
      entry: r.e ? { stepKey: s.stepKey, error: r.e } : { stepKey: s.stepKey, outputJson: r.o ?? "null" },
    };
  }

  /**
   * Journals the step results of many executions in one statement (group
   * commit): each is written if its execution still holds the run and its
   * step has no result yet. Returns the outcome of each, in order; those
   * not written cost one more round trip each to tell "existing" from
   * "lease-lost", which only happens after a takeover. A result Postgres
   * refuses as data fails the whole statement: the caller then journals
   * them one by one.
   */
  async journalSteps(records: readonly StepRecord[]): Promise<JournalOutcome[]> {
    if (records.length === 1) return [await this.journalStep(records[0] as StepRecord)];
    const written = await this.sql.query<{ run_id: string; step_key: string }>(
      `INSERT INTO steps (run_id, step_key, step_id, attempt, started_at, ended_at, output, error)
       SELECT s.run_id, s.step_key, s.step_id, s.attempt, to_timestamp(s.sa / 1000.0), to_timestamp(s.ea / 1000.0), s.o, s.e
       FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int[], $5::float8[], $6::float8[], $7::jsonb[], $8::jsonb[], $9::int[])
         AS s(run_id, step_key, step_id, attempt, sa, ea, o, e, lease)
       JOIN runs r ON r.id = s.run_id AND r.lease = s.lease AND r.status = 'RUNNING'
       ON CONFLICT (run_id, step_key) DO NOTHING
       RETURNING run_id, step_key`,
      [
        records.map((s) => s.runId),
        records.map((s) => s.stepKey),
        records.map((s) => s.stepId),
        records.map((s) => s.attempt),
        records.map((s) => s.startedAtMs),
        records.map((s) => s.endedAtMs),
        records.map((s) => (s.error ? null : (s.outputJson ?? "null"))),
        records.map((s) => (s.error ? JSON.stringify(s.error) : null)),
        records.map((s) => s.lease),
      ],
    );
    const done = new Set(written.map((w) => `${w.run_id}\u0000${w.step_key}`));
    return Promise.all(
      records.map(async (s): Promise<JournalOutcome> => {
        if (done.has(`${s.runId}\u0000${s.stepKey}`)) return { kind: "journaled" };
        return this.stepOutcome(s);
      }),
    );
  }

  /**
   * Ends a run this execution holds as COMPLETED, dropping timers and waits
   * it left. Returns its end time (ms since the epoch), null when the lease was lost. One round trip.
   */
  async completeRun(runId: string, lease: number, outputJson: string): Promise<number | null> {
    const rows = await this.sql.query<{ ended_at_ms: number | string }>(
      `WITH r AS (
         UPDATE runs SET status = 'COMPLETED', output = $3::jsonb, ended_at = now(),
           executor_id = NULL, lease_expires_at = NULL
         WHERE id = $1 AND lease = $2 AND status = 'RUNNING' RETURNING id, ended_at
       ), t AS (DELETE FROM timers WHERE run_id IN (SELECT id FROM r)),
       w AS (DELETE FROM waits WHERE run_id IN (SELECT id FROM r))
       SELECT floor(extract(epoch FROM ended_at) * 1000)::float8 AS ended_at_ms FROM r`,
      [runId, lease, outputJson],
    );
    return rows[0] ? Number(rows[0].ended_at_ms) : null;
  }

  /**
   * Ends many runs as COMPLETED in one statement, as completeRun does each;
   * one entry per run, in order: its end time, null when its lease was lost.
   */
  async completeRuns(runs: ReadonlyArray<{ runId: string; lease: number; outputJson: string }>): Promise<Array<number | null>> {
    const rows = await this.sql.query<{ id: string; ended_at_ms: number | string }>(
      // Locked in id order (see claimRuns).
      `WITH target AS (
         SELECT id FROM runs WHERE id = ANY($1::uuid[]) AND status = 'RUNNING' ORDER BY id FOR UPDATE
       ), r AS (
         UPDATE runs SET status = 'COMPLETED', output = c.o, ended_at = now(), executor_id = NULL, lease_expires_at = NULL
         FROM unnest($1::uuid[], $2::int[], $3::jsonb[]) AS c(id, lease, o), target
         WHERE runs.id = c.id AND target.id = c.id AND runs.lease = c.lease AND runs.status = 'RUNNING'
         RETURNING runs.id, runs.ended_at
       ), t AS (DELETE FROM timers WHERE run_id IN (SELECT id FROM r)),
       w AS (DELETE FROM waits WHERE run_id IN (SELECT id FROM r))
       SELECT id, floor(extract(epoch FROM ended_at) * 1000)::float8 AS ended_at_ms FROM r`,
      [runs.map((r) => r.runId), runs.map((r) => r.lease), runs.map((r) => r.outputJson)],
    );
    const done = new Map(rows.map((r) => [r.id, Number(r.ended_at_ms)]));
    return runs.map((r) => done.get(r.runId) ?? null);
  }

  /**
   * Ends a run this execution holds as FAILED, dropping timers and waits it
   * left. When its function has an onFailure handler, creates the handler's
   * run in the same statement, triggered by a "stepwise/run.failed" event
   * carrying the failed run's event and error; that run is returned for its
   * work to be published (it gets the short deadline until markPublished).
   * `ok` false when the lease was lost. One round trip.
   */
  async failRun(
    runId: string,
    lease: number,
    error: StoredError,
    requeueAfterMs = 60_000,
  ): Promise<{ ok: boolean; failureRun: PublishedRunRef | undefined }> {
    const rows = await this.sql.query<{ kind: string; id: string | null; app_id: string; function_id: string; lease: number }>(
      `WITH r AS (
         UPDATE runs SET status = 'FAILED', error = $3::jsonb, ended_at = now(),
           executor_id = NULL, lease_expires_at = NULL
         WHERE id = $1 AND lease = $2 AND status = 'RUNNING'
         RETURNING id, app_id, function_id, event_id
       ), t AS (DELETE FROM timers WHERE run_id IN (SELECT id FROM r)),
       w AS (DELETE FROM waits WHERE run_id IN (SELECT id FROM r)),
       h AS (
         SELECT r.id AS run_id, r.app_id, r.function_id, f.config->>'onFailure' AS handler,
           jsonb_build_object('function_id', r.function_id, 'run_id', r.id, 'error', $3::jsonb,
             'event', jsonb_build_object('id', e.id, 'name', e.name, 'data', e.data,
               'ts', to_char(e.ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))) AS data
         FROM r JOIN functions f ON f.app_id = r.app_id AND f.function_id = r.function_id
         JOIN events e ON e.id = r.event_id
         WHERE coalesce(f.config->>'onFailure', '') <> ''
       ), ev AS (
         INSERT INTO events (id, name, data, ts, received_at)
         SELECT 'stepwise-failed-' || h.run_id, 'stepwise/run.failed', h.data, now(), now() FROM h
         ON CONFLICT (id) DO NOTHING
       ), created AS (
         INSERT INTO runs (id, app_id, function_id, event_id, status, lease_expires_at)
         SELECT gen_random_uuid(), h.app_id, h.handler, 'stepwise-failed-' || h.run_id, 'QUEUED',
           now() + $4 * interval '1 millisecond'
         FROM h
         ON CONFLICT (app_id, function_id, event_id) DO NOTHING
         RETURNING id, app_id, function_id, lease
       )
       SELECT 'failed' AS kind, NULL AS id, NULL AS app_id, NULL AS function_id, NULL AS lease FROM r
       UNION ALL
       SELECT 'handler', id::text, app_id, function_id, lease FROM created`,
      [runId, lease, JSON.stringify(error), requeueAfterMs],
    );
    const handler = rows.find((r) => r.kind === "handler");
    return {
      ok: rows.some((r) => r.kind === "failed"),
      failureRun: handler?.id
        ? { runId: handler.id, appId: handler.app_id, functionId: handler.function_id, lease: Number(handler.lease) }
        : undefined,
    };
  }

  /**
   * Journals a failed attempt that will be retried (of a step, or of the
   * handler with stepKey ''), if this execution still holds the run. First
   * write wins per attempt number. False when the lease was lost. One
   * round trip.
   */
  async journalAttempt(a: AttemptRecord): Promise<boolean> {
    const rows = await this.sql.query<{ held: boolean }>(
      `WITH held AS (SELECT 1 FROM runs WHERE id = $1 AND lease = $9 AND status = 'RUNNING'),
       ins AS (
         INSERT INTO step_attempts (run_id, step_key, attempt, step_id, started_at, ended_at, error, retry_at)
         SELECT $1, $2, $3, $4, to_timestamp($5 / 1000.0), to_timestamp($6 / 1000.0), $7::jsonb, to_timestamp($8 / 1000.0)
         FROM held
         ON CONFLICT (run_id, step_key, attempt) DO NOTHING
       )
       SELECT EXISTS (SELECT 1 FROM held) AS held`,
      [a.runId, a.stepKey, a.attempt, a.stepId, a.startedAtMs, a.endedAtMs, JSON.stringify(a.error), a.retryAtMs, a.lease],
    );
    return rows[0]?.held === true;
  }

  /**
   * Hands a run this execution holds back to the queue (its worker vanished
   * or the executor drains), with a deadline: unless markPublished confirms
   * its work was published first, the reconciler publishes it then. False
   * when the lease was lost.
   */
  async requeueRun(runId: string, lease: number, requeueAfterMs: number): Promise<boolean> {
    const rows = await this.sql.query(
      `UPDATE runs SET status = 'QUEUED', executor_id = NULL,
         lease_expires_at = now() + $3 * interval '1 millisecond'
       WHERE id = $1 AND lease = $2 AND status = 'RUNNING' RETURNING 1 AS ok`,
      [runId, lease, requeueAfterMs],
    );
    return rows.length > 0;
  }

  /**
   * Extends the leases of the runs an executor still holds (runIds): a run
   * it dropped keeps its lease lapsing. One round trip for all of them.
   */
  async renewLeases(executorId: string, runIds: readonly string[], leaseMs: number): Promise<number> {
    // A run locked by another statement (it is being completed or
    // suspended) is skipped rather than waited for: renewing it is moot,
    // and waiting could deadlock with a statement locking in another order.
    const rows = await this.sql.query(
      `UPDATE runs SET lease_expires_at = now() + $3 * interval '1 millisecond'
       WHERE id IN (
         SELECT id FROM runs WHERE executor_id = $1 AND status = 'RUNNING' AND id = ANY($2::uuid[])
         ORDER BY id FOR UPDATE SKIP LOCKED)
       RETURNING 1 AS ok`,
      [executorId, runIds, leaseMs],
    );
    return rows.length;
  }

  /**
   * Confirms that the work of QUEUED runs is on the bus: the reconciler
   * leaves them alone until the long backstop. Only for the lease they had
   * when published: a run claimed and handed back since keeps its short
   * deadline. One round trip for all of them.
   */
  async markPublished(runs: readonly PublishedRun[], backstopMs = DEFAULT_QUEUED_BACKSTOP_MS): Promise<void> {
    if (runs.length === 0) return;
    // A run locked by another statement is skipped, not waited for: it is
    // being claimed (then the deadline is moot), and waiting deadlocked with
    // claims of the same runs (each waiting a second for Postgres to notice,
    // which stalled the wake-ups of W4). A skipped run keeps its short
    // deadline: at worst the reconciler publishes its work once more.
    await this.sql.query(
      `UPDATE runs r SET lease_expires_at = now() + $3 * interval '1 millisecond'
       FROM unnest($1::uuid[], $2::int[]) AS p(id, lease)
       WHERE r.id = p.id AND r.lease = p.lease AND r.id IN (
         SELECT id FROM runs WHERE id = ANY($1::uuid[]) AND status = 'QUEUED' ORDER BY id FOR UPDATE SKIP LOCKED)`,
      [runs.map((r) => r.runId), runs.map((r) => r.lease), backstopMs],
    );
  }

  /**
   * The reconciler's sweep: runs whose executor stopped renewing its lease,
   * and QUEUED runs whose work was not confirmed published by their
   * deadline, go back to QUEUED with a new deadline and are returned so
   * their work is published again (then markPublished). Runs waiting for a
   * worker with their work on the bus carry no deadline and are left alone,
   * however long they wait. Several schedulers share the sweep without
   * overlap (SKIP LOCKED).
   */
  async reclaimStale(limit: number, requeueAfterMs: number): Promise<PublishedRunRef[]> {
    const rows = await this.sql.query<{ id: string; app_id: string; function_id: string; lease: number }>(
      `UPDATE runs SET status = 'QUEUED', executor_id = NULL,
         lease_expires_at = now() + $2 * interval '1 millisecond'
       WHERE id IN (
         SELECT id FROM runs
         WHERE status IN ('QUEUED', 'RUNNING') AND lease_expires_at < now()
         ORDER BY lease_expires_at LIMIT $1 FOR UPDATE SKIP LOCKED)
       RETURNING id, app_id, function_id, lease`,
      [limit, requeueAfterMs],
    );
    return rows.map((r) => ({ runId: r.id, appId: r.app_id, functionId: r.function_id, lease: Number(r.lease) }));
  }

  /**
   * Makes every unfinished run due for the reconciler at once. For the
   * embedded engine after a restart: its in-process bus lost the work
   * messages and its previous process held no lease any more.
   */
  async expireUnfinished(): Promise<void> {
    await this.sql.query(
      `UPDATE runs SET lease_expires_at = now() - interval '1 millisecond'
       WHERE status IN ('QUEUED', 'RUNNING')`,
    );
  }

  /** Reads a run with its event, journal and failed attempts; null when unknown. Three round trips. */
  getRun(runId: string): Promise<RunView | null> {
    return readRun(this.sql, runId);
  }

  /**
   * Of the given event ids, those that started at least one run and whose
   * runs all ended (COMPLETED, FAILED or CANCELLED). One round trip.
   */
  async endedEvents(eventIds: readonly string[]): Promise<string[]> {
    if (eventIds.length === 0) return [];
    const rows = await this.sql.query<{ event_id: string }>(
      `SELECT event_id FROM runs WHERE event_id = ANY($1::text[])
       GROUP BY event_id HAVING bool_and(status IN ('COMPLETED', 'FAILED', 'CANCELLED'))`,
      [eventIds],
    );
    return rows.map((r) => r.event_id);
  }

  /** Lists runs newest first, without steps. One round trip. */
  listRuns(filter: RunFilter): Promise<RunView[]> {
    return listRuns(this.sql, filter);
  }

  /** The runs of several events, oldest first, without steps. One round trip. */
  runsOfEvents(eventIds: readonly string[]): Promise<RunView[]> {
    return listRunsOfEvents(this.sql, eventIds);
  }

  /** Counts stored events with an id; used by tests and tools. */
  async hasEvent(eventId: string): Promise<boolean> {
    const rows = await this.sql.query("SELECT 1 AS ok FROM events WHERE id = $1", [eventId]);
    return rows.length > 0;
  }
}

/** A claimed run row as claimRuns returns it. */
type ClaimRow = {
  id: string;
  app_id: string;
  function_id: string;
  lease: number;
  event_id: string;
  event_name: string;
  event_data: string;
  event_ts_ms: string | number;
  created_at_ms: string | number;
  started_at_ms: string | number;
  event_runs: number;
  journal: Array<{ k: string; o: string | null; e: StoredError | null }> | string;
  attempts: Record<string, { n: number; r: number }> | string;
  wakes: number;
};

function toClaimedRun(r: ClaimRow): ClaimedRun {
  const journal = typeof r.journal === "string" ? (JSON.parse(r.journal) as typeof r.journal) : r.journal;
  const attempts = (typeof r.attempts === "string" ? JSON.parse(r.attempts) : r.attempts) as Record<string, { n: number; r: number }>;
  const stepAttempts: Record<string, number> = {};
  const retryAtMs: Record<string, number> = {};
  for (const [key, a] of Object.entries(attempts)) {
    if (key !== "") stepAttempts[key] = Number(a.n);
    retryAtMs[key] = Math.floor(Number(a.r));
  }
  const handlerFailures = attempts[""]?.n;
  return {
    runId: r.id,
    appId: r.app_id,
    functionId: r.function_id,
    lease: Number(r.lease),
    // Whole milliseconds: a database time has microseconds, a protobuf Timestamp integral nanos.
    event: { id: r.event_id, name: r.event_name, dataJson: r.event_data, tsMs: Math.floor(Number(r.event_ts_ms)) },
    journal: (journal as Array<{ k: string; o: string | null; e: StoredError | null }>).map((j) =>
      j.e ? { stepKey: j.k, error: j.e } : { stepKey: j.k, outputJson: j.o ?? "null" },
    ),
    attempt: Number(handlerFailures ?? 0) + 1,
    stepAttempts,
    retryAtMs,
    wakes: Number(r.wakes),
    createdAtMs: Number(r.created_at_ms),
    startedAtMs: Number(r.started_at_ms),
    eventRuns: Number(r.event_runs),
  };
}

/**
 * Events as one JSON array for jsonb_to_recordset, each one's data
 * embedded as the JSON text it already is (no parse and re-encode). The
 * data comes from the event stream as ingest encoded it; a malformed one
 * fails the statement, and the group commit then writes each event alone.
 */
function eventsDocument(events: readonly EventInput[]): string {
  return `[${events
    .map((e) => `{"id":${JSON.stringify(e.id)},"name":${JSON.stringify(e.name)},"data":${e.dataJson},"ts":${e.tsMs},"rcv":${e.receivedAtMs}}`)
    .join(",")}]`;
}
