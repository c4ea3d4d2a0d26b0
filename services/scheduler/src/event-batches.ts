import {
  GroupCommit,
  WorkPublisher,
  type Bus,
  type EventInput,
  type JournalStore,
  type RecordedEvent,
  type RunRef,
  type WaitCandidate,
  type WaitEvent,
  type WaitStore,
} from "@stepwise/core";

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
