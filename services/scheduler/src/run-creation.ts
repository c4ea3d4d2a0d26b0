import {
  compileCondition,
  GroupCommit,
  type EventInput,
  type RecordedEvent,
  type WaitCandidate,
  conditionEvent,
  waitMatches,
  waitOutputJson,
  workMessages,
  WorkPublisher,
  type Bus,
  type JournalStore,
  type Logger,
  type RunRef,
  type WaitEvent,
  type WaitStore,
} from "@stepwise/core";
import type { EventRecord } from "@stepwise/proto";

/**
 * Handles one event from the event stream: persists it and creates one run
 * per function it triggers without a condition (idempotently, in the same
 * statement), creates the runs of triggers whose CEL condition holds,
 * publishes the work of the new runs, then resolves the waits the event
 * matches. The caller acks the event only after this resolves, so a crash
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
  const event = { id: record.id, name: record.name, dataJson: record.dataJson, tsMs: Number(record.tsMs) };
  const input = { ...event, receivedAtMs: Number(record.receivedAtMs) };
  const recorded = deps.batches
    ? await deps.batches.record(input)
    : await deps.store.recordEventMatching(input, deps.backstopMs);
  const runs = [...recorded.runs];
  if (recorded.conditional.length > 0) {
    const bound = { event: conditionEvent(event) };
    const passing = recorded.conditional.filter((t) =>
      t.conditions.some((c) => {
        try {
          return compileCondition(c, ["event"]).test(bound);
        } catch (err) {
          deps.log?.warn({ err, function: t.functionId }, "a stored trigger condition does not compile");
          return false;
        }
      }),
    );
    runs.push(...(await deps.store.createRuns(event.id, passing, deps.backstopMs)));
  }
  if (runs.length > 0) await publishFor(deps, runs);
  // After the event's commit (above), so that a wait committed before this
  // query is seen here, and one committed after sees the event in its lookback.
  await resolveWaits(event, recorded.storedAtMs, deps);
  return runs;
}

/**
 * The scheduler's statements for concurrent events, each shared by the
 * events handled at the same time (group commit).
 */
export class EventBatches {
  private readonly records: GroupCommit<EventInput, RecordedEvent>;
  private readonly lookups: GroupCommit<{ event: WaitEvent; storedAtMs: number }, WaitCandidate[]>;
  private readonly work: WorkPublisher;

  constructor(store: JournalStore, waits: WaitStore, bus: Bus, backstopMs?: number) {
    this.work = new WorkPublisher(bus);
    this.records = new GroupCommit(
      (events) => store.recordEventsMatching(events, backstopMs),
      (event) => store.recordEventMatching(event, backstopMs),
    );
    this.lookups = new GroupCommit(
      (events) => waits.candidatesMany(events),
      (x) => waits.candidates(x.event, x.storedAtMs),
    );
  }

  record(event: EventInput): Promise<RecordedEvent> {
    return this.records.submit(event);
  }

  candidates(event: WaitEvent, storedAtMs: number): Promise<WaitCandidate[]> {
    return this.lookups.submit({ event, storedAtMs });
  }

  /** Publishes the work of runs, in the messages of every event handled in the same turn. */
  publish(runs: readonly RunRef[]): Promise<void> {
    return this.work.publish(runs);
  }
}

/** Resolves the waits an event matches and publishes the work of the runs it woke. */
async function resolveWaits(
  event: WaitEvent,
  storedAtMs: number,
  deps: { waits: WaitStore; store: JournalStore; bus: Bus; requeueAfterMs?: number; backstopMs?: number; batches?: EventBatches },
): Promise<void> {
  const candidates = deps.batches
    ? await deps.batches.candidates(event, storedAtMs)
    : await deps.waits.candidates(event, storedAtMs);
  if (candidates.length === 0) return;
  const output = waitOutputJson(event);
  const matches = candidates
    .filter((c) => waitMatches(c.condition, c.runEvent, event))
    .map((c) => ({ runId: c.runId, stepKey: c.stepKey, outputJson: output }));
  const woken = await deps.waits.resolve(matches, deps.requeueAfterMs ?? 60_000);
  if (woken.length === 0) return;
  await publishFor(deps, woken);
  await deps.store.markPublished(woken, deps.backstopMs);
}

/** Publishes the work of runs with the event batches' messages when there are batches. */
function publishFor(deps: { bus: Bus; batches?: EventBatches | undefined }, runs: readonly RunRef[]): Promise<void> {
  return deps.batches ? deps.batches.publish(runs) : publishRunWork(deps.bus, runs);
}

/** Publishes the work of runs, in one message per function and batch of runs. */
export function publishRunWork(bus: Bus, runs: readonly RunRef[]): Promise<void> {
  return bus.publishWork(workMessages(runs));
}

/**
 * The reconciler closes the gap between a Postgres commit and a NATS
 * publish: runs whose executor stopped renewing its lease, runs handed back
 * to the queue whose publish was not confirmed by their deadline, and, once
 * per long backstop, runs still waiting in the queue (in case the bus lost
 * their message) get their work published again. A duplicate work message
 * is harmless: claiming a run is idempotent.
 */
export class Reconciler {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;

  constructor(
    private readonly deps: {
      store: JournalStore;
      bus: Bus;
      log: Logger;
      requeueAfterMs: number;
      intervalMs: number;
      backstopMs?: number;
    },
  ) {}

  start(): void {
    const tick = () => {
      this.running = this.sweep()
        .then(() => undefined)
        .catch((err: unknown) => this.deps.log.warn({ err }, "reconciler sweep failed"))
        .finally(() => {
          this.running = undefined;
          if (this.timer !== undefined) this.timer = setTimeout(tick, this.deps.intervalMs);
        });
    };
    this.timer = setTimeout(tick, this.deps.intervalMs);
  }

  /** One sweep; returns how many runs got their work published again. */
  async sweep(): Promise<number> {
    let total = 0;
    for (;;) {
      const runs = await this.deps.store.reclaimStale(500, this.deps.requeueAfterMs);
      if (runs.length === 0) return total;
      await publishRunWork(this.deps.bus, runs);
      await this.deps.store.markPublished(runs, this.deps.backstopMs);
      total += runs.length;
      this.deps.log.info({ runs: runs.length }, "re-published work of stale runs");
      if (runs.length < 500) return total;
    }
  }

  async stop(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.running;
  }
}
