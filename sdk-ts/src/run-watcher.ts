import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { RunService, WatchRunsRequestSchema, type Run, type WatchRunsRequest } from "@stepwise/proto";
import { pushable, type Pushable } from "it-pushable";
import { requestStream, StreamLinger } from "./wire.js";

/** First wait before a failed stream is opened again; it doubles up to MAX_RETRY_MS. */
const FIRST_RETRY_MS = 100;
const MAX_RETRY_MS = 5_000;

/** Stream failures that a retry would meet again. */
const REFUSALS = new Set([
  Code.Unimplemented,
  Code.InvalidArgument,
  Code.ResourceExhausted,
  Code.Unauthenticated,
  Code.PermissionDenied,
]);

/** The outcome of a wait: the ended runs, "timeout", or "unsupported" (an ingest without WatchRuns). */
export type WatchOutcome = Run[] | "timeout" | "unsupported";

/** One WatchRuns stream: its request side, and whether it was ended. */
interface WatchStream {
  outbox: Pushable<WatchRunsRequest>;
  ended: boolean;
}

/**
 * Waits for the runs of any number of events over one RunService.WatchRuns
 * stream, instead of a call per event. The stream opens on the first wait,
 * carries the ids of the waits that start in the same turn of the event
 * loop in one message, ends STREAM_LINGER_MS after nothing is waited for
 * (so waits one after the other share it, and it keeps the process alive no
 * longer than that), and is opened again, with every pending id, after it
 * fails. An ingest without WatchRuns makes every wait "unsupported", and
 * the caller falls back to WaitForRuns.
 */
export class RunWatcher {
  private readonly waiting = new Map<string, Set<(outcome: WatchOutcome) => void>>();
  private stream: WatchStream | undefined;
  private readonly toWatch = new Set<string>();
  private readonly toForget = new Set<string>();
  private flushScheduled = false;
  private retryMs = FIRST_RETRY_MS;
  private retryTimer: NodeJS.Timeout | undefined;
  private unsupported = false;
  private readonly linger = new StreamLinger(() => this.endStream());

  constructor(private readonly client: Client<typeof RunService>) {}

  /** Resolves with the runs of the event once all of them ended, or "timeout" after timeoutMs. */
  wait(eventId: string, timeoutMs: number): Promise<WatchOutcome> {
    if (this.unsupported) return Promise.resolve("unsupported");
    return new Promise<WatchOutcome>((resolve) => {
      let set = this.waiting.get(eventId);
      const first = set === undefined;
      if (!set) this.waiting.set(eventId, (set = new Set()));
      const waiters = set;
      const done = (outcome: WatchOutcome) => {
        clearTimeout(timer);
        resolve(outcome);
      };
      const timer = setTimeout(() => {
        waiters.delete(done);
        if (waiters.size === 0 && this.waiting.get(eventId) === waiters) {
          this.waiting.delete(eventId);
          this.toWatch.delete(eventId);
          this.toForget.add(eventId);
          this.scheduleFlush();
        }
        resolve("timeout");
      }, timeoutMs);
      waiters.add(done);
      if (first) {
        this.toForget.delete(eventId);
        this.toWatch.add(eventId);
        this.scheduleFlush();
      }
    });
  }

  /** Sends what this turn added and dropped, on the open stream or on a new one. */
  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      this.flush();
    });
  }

  private flush(): void {
    if (this.retryTimer) return; // The stream opened after the retry wait sends every pending id.
    if (!this.stream) {
      if (this.waiting.size > 0) this.open();
      this.toWatch.clear();
      this.toForget.clear();
      return;
    }
    if (this.toWatch.size > 0 || this.toForget.size > 0) {
      this.stream.outbox.push(
        create(WatchRunsRequestSchema, { eventIds: [...this.toWatch], forgetEventIds: [...this.toForget] }),
      );
      this.toWatch.clear();
      this.toForget.clear();
    }
    if (this.waiting.size === 0) this.linger.idle();
    else this.linger.busy();
  }

  /**
   * Ends the request side now, without waiting for the linger: the server
   * still answers what the stream watches, then ends it. A later wait
   * opens a new stream.
   */
  close(): void {
    this.endStream();
  }

  /** Ends the request side: the server ends the stream once nothing it watches is left. */
  private endStream(): void {
    this.linger.busy();
    const s = this.stream;
    if (!s) return;
    this.stream = undefined;
    s.ended = true;
    s.outbox.end();
  }

  private open(): void {
    const stream: WatchStream = { outbox: pushable<WatchRunsRequest>({ objectMode: true }), ended: false };
    this.stream = stream;
    this.linger.busy();
    this.toWatch.clear();
    this.toForget.clear();
    stream.outbox.push(create(WatchRunsRequestSchema, { eventIds: [...this.waiting.keys()] }));
    void this.read(stream);
  }

  private async read(stream: WatchStream): Promise<void> {
    let failure: ConnectError | undefined;
    try {
      for await (const res of this.client.watchRuns(requestStream(stream.outbox))) {
        this.retryMs = FIRST_RETRY_MS;
        for (const ev of res.events) {
          const waiters = this.waiting.get(ev.eventId);
          if (!waiters) continue;
          this.waiting.delete(ev.eventId);
          for (const done of waiters) done(ev.runs);
        }
        if (this.waiting.size === 0 && this.stream === stream) this.linger.idle();
      }
    } catch (err) {
      failure = ConnectError.from(err);
    }
    stream.outbox.end();
    if (this.stream === stream) this.stream = undefined;
    if (failure && REFUSALS.has(failure.code)) {
      // Not worth a retry: the waits fall back to WaitForRuns, which
      // reports the problem; a server without WatchRuns is not asked again.
      if (failure.code === Code.Unimplemented) this.unsupported = true;
      for (const waiters of this.waiting.values()) for (const done of waiters) done("unsupported");
      this.waiting.clear();
      return;
    }
    if (this.waiting.size === 0 || this.stream) return;
    if (!failure && stream.ended) {
      // Ended by us while a new wait came in: open a fresh stream for it.
      this.open();
      return;
    }
    // Failed, or ended by the server: open again, with every pending id, after a backoff.
    const wait = this.retryMs;
    this.retryMs = Math.min(MAX_RETRY_MS, this.retryMs * 2);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      if (this.waiting.size > 0 && !this.stream) this.open();
    }, wait);
  }
}
