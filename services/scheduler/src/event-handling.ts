import {
  cancelMatchedRuns,
  compileCondition,
  conditionEvent,
  endSpan,
  ExpressionCache,
  flowKeyValue,
  publishRunWork,
  startSpanAfter,
  waitMatches,
  waitOutputJson,
  workRetryOf,
  type Bus,
  type EventLookup,
  type JournalStore,
  type Logger,
  type PublishedRunRef,
  type RunRef,
  type WaitCandidate,
  type WaitStore,
} from "@stepwise/core";
import type { EventRecord } from "@stepwise/proto";
import type { EventBatches } from "./event-batches.js";

/** The key expressions of event windows, compiled once each. */
const expressions = new ExpressionCache();

// What the scheduler does with each event of the stream: the journal
// stores it and creates its runs (services/core/src/journal/run-creation.ts)
// or gathers it into the event windows of functions with debounce or
// batchEvents (event-windows.ts), then the waits it matches are resolved
// and the runs whose cancelOn rules it fires are cancelled.

/**
 * Handles one event from the event stream: persists it and creates one run
 * per function it triggers without a condition (idempotently, in the same
 * statement), creates the runs of triggers whose CEL condition holds,
 * publishes the work of the new runs, then resolves the waits the event
 * matches and cancels the runs whose cancelOn rules it fires (and the new
 * runs whose rules an event stored before fired). The caller acks the event only after this resolves, so a crash
 * anywhere in between redelivers the event, and the redelivery publishes
 * the work of runs still QUEUED and matches the waits again.
 */
export async function handleEvent(
  record: EventRecord,
  deps: {
    store: JournalStore;
    waits: WaitStore;
    bus: Bus;
    backstopMs?: number;
    requeueAfterMs?: number;
    log?: Logger;
    /** Shares statements with the other events handled at the same time; direct calls without it. */
    batches?: EventBatches;
  },
): Promise<RunRef[]> {
  // The event's span: its runs continue the trace from it.
  const traced = startSpanAfter("stepwise.event", record.traceParent, { "stepwise.event.name": record.name, "stepwise.event.id": record.id }, "consumer");
  try {
    const runs = await handleTracedEvent(record, traced.traceParent, deps);
    traced.span.setAttribute("stepwise.runs", runs.length);
    endSpan(traced.span);
    return runs;
  } catch (err) {
    endSpan(traced.span, String(err));
    throw err;
  }
}

async function handleTracedEvent(record: EventRecord, traceParent: string, deps: Parameters<typeof handleEvent>[1]): Promise<RunRef[]> {
  const event = { id: record.id, name: record.name, dataJson: record.dataJson, tsMs: Number(record.tsMs), ...(record.appId ? { appId: record.appId } : {}) };
  const input = { ...event, receivedAtMs: Number(record.receivedAtMs), ...(traceParent ? { traceParent } : {}) };
  const recorded = deps.batches
    ? await deps.batches.record(input)
    : await deps.store.recordEventMatching(input, deps.backstopMs);
  const runs = [...recorded.runs];
  let bound: { event: ReturnType<typeof conditionEvent> } | undefined;
  const fires = (t: { functionId: string; conditions: string[] | null }) =>
    t.conditions === null ||
    t.conditions.some((c) => {
      try {
        bound ??= { event: conditionEvent(event) };
        return compileCondition(c, ["event"]).test(bound);
      } catch (err) {
        deps.log?.warn({ err, function: t.functionId }, "a stored trigger condition does not compile");
        return false;
      }
    });
  if (recorded.conditional.length > 0) {
    runs.push(...(await deps.store.createRuns(event.id, recorded.conditional.filter(fires), deps.backstopMs, traceParent || undefined)));
  }
  if (recorded.gathering.length > 0) {
    // Debounce and batchEvents: the event goes into its key's window, whose run a timer firing makes.
    const items = recorded.gathering.filter(fires).map((t) => ({
      appId: t.appId,
      functionId: t.functionId,
      eventId: event.id,
      key: flowKeyValue(t.window.key, event, (source) => expressions.get(source), deps.log),
      window: t.window,
    }));
    await deps.store.gatherEvents(items);
  }
  if (runs.length > 0) await publishNewRuns(deps, runs);
  // After the event's and the runs' commit (above), so that a wait or a
  // cancelOn rule committed before this query is seen here, and one
  // committed after sees the event in its lookback.
  const lookup: EventLookup = {
    event,
    storedAtMs: recorded.storedAtMs,
    receivedAtMs: input.receivedAtMs,
    newRunIds: runs.map((r) => r.runId),
  };
  const { waits, cancels } = deps.batches ? await deps.batches.matches(lookup) : ((await deps.waits.matchesMany([lookup]))[0] ?? { waits: [], cancels: [] });
  if (cancels.length > 0) await cancelMatchedRuns(deps, cancels);
  if (waits.length > 0) await resolveWaits(event, waits, deps);
  return runs;
}

/** Resolves the waits an event matches and publishes the work of the runs it woke. */
async function resolveWaits(
  event: EventLookup["event"],
  candidates: readonly WaitCandidate[],
  deps: { waits: WaitStore; store: JournalStore; bus: Bus; requeueAfterMs?: number; backstopMs?: number; batches?: EventBatches; log?: Logger },
): Promise<void> {
  const output = waitOutputJson(event);
  const matches = candidates
    .filter((c) => waitMatches(c.condition, c.runEvent, event))
    .map((c) => ({ runId: c.runId, stepKey: c.stepKey, outputJson: output }));
  const woken = await deps.waits.resolve(matches, deps.requeueAfterMs ?? 60_000);
  if (woken.length === 0) return;
  try {
    await publishFor(deps, woken);
  } catch {
    // A redelivered event would not wake these runs again (their waits are
    // resolved): their work is the bus's retry's, as any refused publish.
    void workRetryOf(deps.bus, deps.log).add(deps.store, woken, deps.backstopMs);
    return;
  }
  await deps.store.markPublished(woken, deps.backstopMs);
}

/**
 * Publishes the work of the runs an event made. A publish NATS refused goes
 * to the bus's retry, and the event waits for it, held (not redelivered)
 * meanwhile: its runs start within a second of NATS taking work again,
 * while a crash of this scheduler still redelivers the event, whose
 * redelivery publishes them. Runs the retry had to let go fail the event,
 * to be redelivered.
 */
async function publishNewRuns(deps: { bus: Bus; store: JournalStore; backstopMs?: number; log?: Logger; batches?: EventBatches | undefined }, runs: readonly PublishedRunRef[]): Promise<void> {
  try {
    await publishFor(deps, runs);
  } catch {
    if (!(await workRetryOf(deps.bus, deps.log).add(deps.store, runs, deps.backstopMs))) {
      throw new Error("the work of the event's runs could not be published");
    }
  }
}

/** Publishes the work of runs with the event batches' messages when there are batches. */
function publishFor(deps: { bus: Bus; batches?: EventBatches | undefined }, runs: readonly RunRef[]): Promise<void> {
  return deps.batches ? deps.batches.publish(runs) : publishRunWork(deps.bus, runs);
}
