// The client of the chaos suite: sends one event at a time through the
// Ingest RPC (the SDK's send, over IngestService.SendStream) at a steady
// rate, alternating between the ingests. A Send that fails or takes too
// long is sent again with the same event id (ids deduplicate), to the
// other ingest, until it is answered OK; every event answered OK is
// recorded with when.
import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { Stepwise } from "@stepwise/sdk";
import { CHAOS_APP_ID, CHAOS_EVENT, type ChaosEvent } from "./chaos-function.js";

/** An event the client sent. */
export interface SentEventRecord {
  id: string;
  n: number;
  /** When the first Send of it started (ms since the epoch). */
  firstSentAt: number;
  /** When a Send of it was first answered OK; undefined if none was. */
  acceptedAt: number | undefined;
  /** Send calls made for it. */
  attempts: number;
  /** The last error, while not accepted. */
  lastError: string | undefined;
}

const SEND_TIMEOUT_MS = 10_000;
const RETRY_DELAY_MS = 300;

export class EventDriver {
  readonly events: SentEventRecord[] = [];
  private readonly clients: Stepwise[];
  private readonly inFlight = new Set<Promise<void>>();
  private retryUntil = Number.POSITIVE_INFINITY;
  failedSends = 0;

  constructor(
    ingestUrls: readonly string[],
    private readonly rate: number,
    private readonly sleepMs: number,
  ) {
    this.clients = ingestUrls.map((url) => new Stepwise({ appId: CHAOS_APP_ID, url }));
  }

  /** Sends events steadily for durationMs; resolves when the last one is sent for the first time. */
  async run(durationMs: number): Promise<void> {
    const start = Date.now();
    const interval = 1000 / this.rate;
    for (let n = 0; ; n++) {
      const due = start + n * interval;
      if (due - start >= durationMs) break;
      const wait = due - Date.now();
      if (wait > 0) await sleep(wait);
      const record: SentEventRecord = { id: randomUUID(), n, firstSentAt: Date.now(), acceptedAt: undefined, attempts: 0, lastError: undefined };
      this.events.push(record);
      const p = this.deliver(record).finally(() => this.inFlight.delete(p));
      this.inFlight.add(p);
    }
  }

  /** Waits for the events still being retried, up to timeoutMs; then gives up on them. */
  async drain(timeoutMs: number): Promise<void> {
    this.retryUntil = Date.now() + timeoutMs;
    while (this.inFlight.size > 0 && Date.now() < this.retryUntil + SEND_TIMEOUT_MS) await sleep(100);
  }

  get accepted(): SentEventRecord[] {
    return this.events.filter((e) => e.acceptedAt !== undefined);
  }

  private async deliver(record: SentEventRecord): Promise<void> {
    const data: ChaosEvent = { n: record.n, sleepMs: this.sleepMs };
    for (let attempt = 0; record.acceptedAt === undefined; attempt++) {
      if (Date.now() > this.retryUntil) return;
      const client = this.clients[(record.n + attempt) % this.clients.length]!;
      record.attempts++;
      const call = client.send({ id: record.id, name: CHAOS_EVENT, data: data as never });
      // A call given up on by the timeout may still be answered OK later: that counts too.
      call.then(
        () => (record.acceptedAt ??= Date.now()),
        () => {},
      );
      let timer: NodeJS.Timeout | undefined;
      const outcome = await Promise.race([
        call.then(
          () => "ok" as const,
          (err: unknown) => String((err as Error)?.message ?? err),
        ),
        new Promise<string>((r) => (timer = setTimeout(() => r(`no answer within ${SEND_TIMEOUT_MS} ms`), SEND_TIMEOUT_MS))),
      ]);
      clearTimeout(timer);
      if (outcome === "ok") {
        record.acceptedAt ??= Date.now();
        record.lastError = undefined;
        return;
      }
      this.failedSends++;
      record.lastError = outcome;
      await sleep(RETRY_DELAY_MS);
    }
  }
}
