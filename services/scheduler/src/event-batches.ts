import {
  GroupCommit,
  WorkPublisher,
  type Bus,
  type EventInput,
  type JournalStore,
  type RecordedEvent,
  type EventLookup,
  type EventMatches,
  type RunRef,
  type ServiceMetrics,
  type WaitStore,
} from "@stepwise/core";

/**
 * The scheduler's statements for concurrent events, each shared by the
 * events handled at the same time (group commit).
 */
export class EventBatches {
  private readonly records: GroupCommit<EventInput, RecordedEvent>;
  private readonly lookups: GroupCommit<EventLookup, EventMatches>;
  private readonly work: WorkPublisher;

  constructor(store: JournalStore, waits: WaitStore, bus: Bus, backstopMs?: number, metrics?: ServiceMetrics) {
    this.work = new WorkPublisher(bus);
    this.records = new GroupCommit(
      (events) => store.recordEventsMatching(events, backstopMs),
      (event) => store.recordEventMatching(event, backstopMs),
      { onBatch: metrics?.journal.batchSize("event") },
    );
    this.lookups = new GroupCommit(
      (lookups) => waits.matchesMany(lookups),
      async (lookup) => (await waits.matchesMany([lookup]))[0] as EventMatches,
      { onBatch: metrics?.journal.batchSize("wait_lookup") },
    );
  }

  record(event: EventInput): Promise<RecordedEvent> {
    return this.records.submit(event);
  }

  /** What a stored event may do to waits and runs (WaitStore.matchesMany). */
  matches(lookup: EventLookup): Promise<EventMatches> {
    return this.lookups.submit(lookup);
  }

  /** Publishes the work of runs, in the messages of every event handled in the same turn. */
  publish(runs: readonly RunRef[]): Promise<void> {
    return this.work.publish(runs);
  }
}
