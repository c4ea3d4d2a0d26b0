import { create } from "@bufbuild/protobuf";
import { EventRecordSchema } from "@stepwise/proto";
import type { JournalStore } from "../journal/journal-store.js";
import type { OutboxEvent } from "../journal/run-ends.js";
import type { Bus } from "./bus.js";

/**
 * Publishes events of the event outbox to the event stream, where the
 * scheduler takes them as any event (their ids deduplicate a second
 * publish, and storing an event twice creates nothing), then removes them
 * from the outbox. Throws when either fails: what is left in the outbox is
 * published again by the scheduler's reconciler.
 */
export async function publishOutboxEvents(store: JournalStore, bus: Bus, events: readonly OutboxEvent[]): Promise<void> {
  if (events.length === 0) return;
  const receivedAtMs = BigInt(Date.now());
  await bus.publishEvents(
    events.map((e) => create(EventRecordSchema, { id: e.id, name: e.name, dataJson: e.dataJson, tsMs: BigInt(e.tsMs), receivedAtMs })),
  );
  await store.deleteOutboxEvents(events.map((e) => e.id));
}
