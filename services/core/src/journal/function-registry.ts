import type { Sql } from "./sql.js";
import type { FunctionRegistration } from "./types.js";

// The functions workers registered, their event triggers and their cron
// schedules: what the scheduler matches events and ticks against. A
// function's run rules (timeouts, cancelOn, flow control, event windows)
// go to function_run_rules.

/**
 * Upserts an app's functions and replaces their triggers and run rules
 * (timeouts, cancelOn: what runs created from then on are armed with), in
 * one transaction. A cron trigger whose schedule did not change keeps its next
 * tick, so a worker reconnecting neither skips nor repeats one.
 */
export async function registerFunctions(sql: Sql, timerChannel: string, appId: string, functions: FunctionRegistration[]): Promise<void> {
  const sorted = [...functions].sort((a, b) => a.id.localeCompare(b.id));
  await sql.transaction(async (tx) => {
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
          `INSERT INTO function_triggers (event_name, app_id, function_id, conditions, flow, gather)
           SELECT x.n, $2, $3, CASE WHEN x.c IS NULL THEN NULL ELSE ARRAY(SELECT jsonb_array_elements_text(x.c)) END, $4, $5
           FROM jsonb_to_recordset($1::jsonb) AS x(n text, c jsonb)`,
          [JSON.stringify([...byName].map(([n, c]) => ({ n, c }))), appId, fn.id, flowControlled(fn), fn.runRules?.window !== undefined],
        );
      }
      const rules = fn.runRules;
      const concurrency = rules?.concurrency ?? [];
      if (
        rules &&
        (rules.startMs !== undefined || rules.finishMs !== undefined || rules.cancelOn.length > 0 || flowControlled(fn) || rules.window)
      ) {
        const cancelOn = rules.cancelOn.map((c) => ({
          event: c.event,
          cond: c.condition ?? "",
          ep: c.equality ? c.equality.eventPath.join(".") : "",
          ap: c.equality ? c.equality.asyncPath.join(".") : "",
          timeout: c.timeoutMs ?? null,
        }));
        await tx.query(
          `INSERT INTO function_run_rules (app_id, function_id, start_ms, finish_ms, cancel_on, concurrency, throttle, priority, admission, gather)
           VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, $7::jsonb, $8, $9::jsonb, $10::jsonb)
           ON CONFLICT (app_id, function_id) DO UPDATE
             SET start_ms = excluded.start_ms, finish_ms = excluded.finish_ms, cancel_on = excluded.cancel_on,
               concurrency = excluded.concurrency, throttle = excluded.throttle, priority = excluded.priority,
               admission = excluded.admission, gather = excluded.gather`,
          [
            appId,
            fn.id,
            rules.startMs ?? null,
            rules.finishMs ?? null,
            JSON.stringify(cancelOn),
            JSON.stringify(concurrency),
            rules.throttle ? JSON.stringify(rules.throttle) : null,
            rules.priority ?? null,
            rules.admission ? JSON.stringify(rules.admission) : null,
            rules.window ? JSON.stringify(rules.window) : null,
          ],
        );
        // The paths events are looked up by (see WaitStore.matchesMany).
        await tx.query(
          `INSERT INTO wait_paths (event_name, key_path)
           SELECT DISTINCT x->>'event', x->>'ap' FROM jsonb_array_elements($1::jsonb) x WHERE x->>'ap' <> ''
           ON CONFLICT DO NOTHING`,
          [JSON.stringify(cancelOn)],
        );
      } else {
        await tx.query("DELETE FROM function_run_rules WHERE app_id = $1 AND function_id = $2", [appId, fn.id]);
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
      if (crons.length > 0) await tx.query("SELECT pg_notify($1, 'cron')", [timerChannel]);
    }
  });
}

/** Whether a function's runs go through the slot keeper (concurrency-slots.ts): flow control decides when they start. */
function flowControlled(fn: FunctionRegistration): boolean {
  const r = fn.runRules;
  return !!r && ((r.concurrency?.length ?? 0) > 0 || r.throttle !== undefined || r.priority !== undefined || r.admission !== undefined);
}

/** A function as registered, for display. */
export interface RegisteredFunction {
  appId: string;
  functionId: string;
  name: string;
  /** The declared configuration (triggers, retries, onFailure). */
  config: Record<string, unknown>;
  updatedAt: Date;
}

/** The registered functions, of one app or all, by app then id. One round trip. */
export async function listFunctions(sql: Sql, appId: string | undefined): Promise<RegisteredFunction[]> {
  const rows = await sql.query<{ app_id: string; function_id: string; name: string; config: Record<string, unknown> | string; updated_at: Date }>(
    `SELECT app_id, function_id, name, config, updated_at FROM functions
     WHERE $1::text IS NULL OR app_id = $1 ORDER BY app_id, function_id`,
    [appId ?? null],
  );
  return rows.map((r) => ({
    appId: r.app_id,
    functionId: r.function_id,
    name: r.name,
    config: (typeof r.config === "string" ? JSON.parse(r.config) : r.config) as Record<string, unknown>,
    updatedAt: r.updated_at,
  }));
}
