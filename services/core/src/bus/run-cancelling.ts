import { waitMatches } from "../conditions/wait-matching.js";
import type { JournalStore } from "../journal/journal-store.js";
import type { CancelOutcome } from "../journal/run-ends.js";
import type { CancelCandidate } from "../journal/wait-store.js";
import type { Logger } from "../runtime/log.js";
import type { Bus } from "./bus.js";
import { publishOutboxEvents } from "./outbox-publishing.js";
import { publishQueuedRuns } from "./run-work.js";

/**
 * What follows a statement that cancelled runs (CancelRun, CancelRuns, a
 * cancelOn event, a timeout), for them and for the runs they invoked that
 * were cancelled with them: the executors holding RUNNING runs are told
 * to stop them, waiters learn that they ended, and their
 * "stepwise/run.cancelled" events are published and taken out of the
 * outbox (or left to the scheduler's reconciler if that fails); the runs
 * that invoked a run cancelled on its own, woken by it, get their work
 * published. Returns how many of the runs given were cancelled (not
 * counting those cancelled with them).
 */
export async function announceCancelled(
  deps: { store: JournalStore; bus: Bus; log?: Logger | undefined },
  cancelled: ReadonlyArray<{ runId: string; outcome: CancelOutcome }>,
): Promise<number> {
  const held = [];
  const ended = [];
  const events = [];
  const woken = [];
  let count = 0;
  const every = cancelled.flatMap((c) => (c.outcome.kind === "cancelled" ? [c, ...(c.outcome.invoked ?? [])] : []));
  for (const { runId, outcome: o } of every) {
    if (o.kind !== "cancelled") continue;
    if (o.was === "RUNNING" && o.executorId) held.push({ runId, executorId: o.executorId, lease: o.lease, reason: o.reason });
    ended.push({ runId, eventId: o.eventId });
    if (o.event) events.push(o.event);
    if (o.wokenRun) woken.push(o.wokenRun);
  }
  for (const c of cancelled) if (c.outcome.kind === "cancelled") count++;
  if (held.length > 0) deps.bus.announceRunsCancelled(held);
  if (ended.length > 0) deps.bus.announceRunsEnded(ended);
  await Promise.all([
    publishOutboxEvents(deps.store, deps.bus, events).catch((err: unknown) => {
      deps.log?.warn({ err, events: events.length }, "publishing stepwise/run.cancelled failed; the reconciler publishes it");
    }),
    publishQueuedRuns(deps.bus, deps.store, woken).catch((err: unknown) => {
      deps.log?.warn({ err, runs: woken.length }, "publishing the work of invoking runs failed; the reconciler publishes it");
    }),
  ]);
  return count;
}

/**
 * Cancels the runs whose cancelOn rule an event fired: of the candidates,
 * those whose condition holds (`event` the run's event, `async` the
 * cancelling one), each run once, with a reason naming the event; then
 * announces them as announceCancelled does. A run that ended meanwhile is
 * left as it is. Returns how many runs were cancelled.
 */
export async function cancelMatchedRuns(
  deps: { store: JournalStore; bus: Bus; log?: Logger | undefined },
  candidates: readonly CancelCandidate[],
): Promise<number> {
  const reasons = new Map<string, string>();
  for (const c of candidates) {
    if (reasons.has(c.runId) || !waitMatches(c.condition, c.runEvent, c.event)) continue;
    reasons.set(c.runId, `cancelOn: event ${JSON.stringify(c.event.name)} (${c.event.id})`);
  }
  if (reasons.size === 0) return 0;
  const ids = [...reasons.keys()];
  const outcomes = await deps.store.cancelRuns(ids, [...reasons.values()]);
  return announceCancelled(deps, outcomes.map((outcome, i) => ({ runId: ids[i]!, outcome })));
}

/**
 * For runs created outside the event stream (cron ticks, onFailure
 * handlers, reruns and replays, invocations), once their creation
 * committed: cancels those whose cancelOn rule an event stored already
 * fires. A failure is logged, not thrown: the run was created, and a rule
 * missed here only matters for an event that raced with its creation.
 */
export async function cancelOnEarlierEvents(
  deps: { store: JournalStore; bus: Bus; log?: Logger | undefined },
  runIds: readonly string[],
): Promise<void> {
  if (runIds.length === 0) return;
  try {
    await cancelMatchedRuns(deps, await deps.store.cancelLookback(runIds));
  } catch (err) {
    deps.log?.warn({ err, runs: runIds.length }, "looking back for the cancelOn events of new runs failed");
  }
}
