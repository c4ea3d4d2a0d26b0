import type { OutgoingEvent, Stepwise } from "@stepwise/sdk";

/** An event once Send returned: its id and when the Send call started (performance.now()). */
export interface SentEvent {
  id: string;
  sentAt: number;
}

interface Queued {
  event: OutgoingEvent;
  resolve: (sent: SentEvent) => void;
  reject: (err: unknown) => void;
}

/** Options of an EventSender. */
export interface EventSenderOptions {
  /** Most events in one Send call. */
  maxBatch?: number;
  /** Most Send calls at once. */
  maxConcurrent?: number;
}

/**
 * Sends events the way a busy client would: events queued in the same turn
 * of the event loop go out in one Send call (the SDK's send takes an
 * array), at most maxBatch per call and maxConcurrent calls at once.
 */
export class EventSender {
  private readonly queue: Queued[] = [];
  private scheduled = false;
  private inFlight = 0;
  private readonly maxBatch: number;
  private readonly maxConcurrent: number;
  /** Send calls made. */
  calls = 0;

  constructor(
    private readonly client: Stepwise,
    options: EventSenderOptions = {},
  ) {
    this.maxBatch = options.maxBatch ?? 500;
    this.maxConcurrent = options.maxConcurrent ?? 4;
  }

  /** Queues an event; resolves once the engine stored it. */
  send(event: OutgoingEvent): Promise<SentEvent> {
    return new Promise<SentEvent>((resolve, reject) => {
      this.queue.push({ event, resolve, reject });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.scheduled || this.queue.length === 0 || this.inFlight >= this.maxConcurrent) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.flush();
    });
  }

  private flush(): void {
    while (this.queue.length > 0 && this.inFlight < this.maxConcurrent) {
      const batch = this.queue.splice(0, this.maxBatch);
      const sentAt = performance.now();
      this.inFlight++;
      this.calls++;
      this.client
        .send(batch.map((q) => q.event))
        .then(
          (ids) => batch.forEach((q, i) => q.resolve({ id: ids[i]!, sentAt })),
          (err: unknown) => batch.forEach((q) => q.reject(err)),
        )
        .finally(() => {
          this.inFlight--;
          this.schedule();
        });
    }
  }
}
