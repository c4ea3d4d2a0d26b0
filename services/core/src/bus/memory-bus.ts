import { setMaxListeners } from "node:events";
import type { EventRecord, RunWork } from "@stepwise/proto";
import { backoffMs, type Bus, type ConsumeEventsOptions, type Delivery, type RunCancel, type RunEnd, type Subscription } from "./bus.js";

interface Entry<T> {
  data: T;
  deliveries: number;
}

/**
 * A FIFO with JetStream's pull semantics: a message handed out stays owned
 * by its receiver until acked; nak puts it back, after a delay.
 */
class Queue<T> {
  private readonly ready: Entry<T>[] = [];
  private readonly waiters: Array<(e: Entry<T> | undefined) => void> = [];
  private closed = false;

  push(entry: Entry<T>): void {
    if (this.closed) return;
    const waiter = this.waiters.shift();
    if (waiter) waiter(entry);
    else this.ready.push(entry);
  }

  /** Resolves with the next entry, or undefined when the wait ends first. */
  take(signal: AbortSignal, timeoutMs: number): Promise<Entry<T> | undefined> {
    const next = this.ready.shift();
    if (next) return Promise.resolve(next);
    if (this.closed || signal.aborted) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      const done = (e: Entry<T> | undefined) => {
        clearTimeout(timer);
        signal.removeEventListener("abort", onAbort);
        resolve(e);
      };
      const onAbort = () => {
        const i = this.waiters.indexOf(done);
        if (i >= 0) this.waiters.splice(i, 1);
        done(undefined);
      };
      const timer = setTimeout(onAbort, timeoutMs);
      signal.addEventListener("abort", onAbort, { once: true });
      this.waiters.push(done);
    });
  }

  get isClosed(): boolean {
    return this.closed;
  }

  close(): void {
    this.closed = true;
    for (const w of this.waiters.splice(0)) w(undefined);
  }
}

function delivery<T>(q: Queue<T>, entry: Entry<T>): Delivery<T> {
  entry.deliveries++;
  let settled = false;
  return {
    data: entry.data,
    deliveryCount: entry.deliveries,
    ack: () => {
      settled = true;
    },
    nak: (delayMs?: number) => {
      if (settled) return;
      settled = true;
      if (delayMs) setTimeout(() => q.push(entry), delayMs).unref();
      else q.push(entry);
    },
    // Nothing to extend: this bus redelivers only on nak.
    working: () => {},
  };
}

/**
 * The in-process bus of `stepwise dev`: the same contract as the JetStream
 * bus (event dedup by id within a window, at-least-once delivery, one queue
 * per app) held in memory. What it holds is lost with the process; the
 * scheduler's reconciler re-publishes the work of unfinished runs from the
 * journal after a restart.
 */
export class MemoryBus implements Bus {
  private readonly events = new Queue<EventRecord>();
  private readonly work = new Map<string, Queue<RunWork>>();
  private readonly seen = new Map<string, number>();
  private readonly endWatchers = new Set<(runs: RunEnd[]) => void>();
  private readonly cancelWatchers = new Set<(runs: RunCancel[]) => void>();

  constructor(private readonly duplicateWindowMs = 10 * 60 * 1000) {}

  announceRunsEnded(runs: readonly RunEnd[]): void {
    announce(this.endWatchers, runs);
  }

  watchRunsEnded(onEnded: (runs: RunEnd[]) => void): Promise<Subscription> {
    return watch(this.endWatchers, onEnded);
  }

  announceRunsCancelled(runs: readonly RunCancel[]): void {
    announce(this.cancelWatchers, runs);
  }

  watchRunsCancelled(onCancelled: (runs: RunCancel[]) => void): Promise<Subscription> {
    return watch(this.cancelWatchers, onCancelled);
  }

  async publishEvents(records: readonly EventRecord[]): Promise<void> {
    const now = Date.now();
    for (const r of records) {
      const at = this.seen.get(r.id);
      if (at !== undefined && now - at < this.duplicateWindowMs) continue;
      this.seen.set(r.id, now);
      this.events.push({ data: r, deliveries: 0 });
    }
    if (this.seen.size > 100_000) {
      for (const [id, at] of this.seen) if (now - at >= this.duplicateWindowMs) this.seen.delete(id);
    }
  }

  async consumeEvents(
    handler: (record: EventRecord, delivery: Delivery<EventRecord>) => Promise<void>,
    options: ConsumeEventsOptions,
  ): Promise<Subscription> {
    const stop = new AbortController();
    const signal = stop.signal;
    // One listener per concurrent handler is expected, not a leak.
    setMaxListeners(options.concurrency + 10, signal);
    const workers = Array.from({ length: options.concurrency }, async () => {
      while (!signal.aborted) {
        const entry = await this.events.take(signal, 60_000);
        if (!entry) {
          if (this.events.isClosed) return;
          continue;
        }
        const d = delivery(this.events, entry);
        await handler(d.data, d).then(
          () => d.ack(),
          () => d.nak(backoffMs(d.deliveryCount)),
        );
      }
    });
    return {
      async stop() {
        stop.abort();
        await Promise.allSettled(workers);
      },
    };
  }

  async publishWork(work: readonly RunWork[]): Promise<void> {
    for (const w of work) this.queue(w.appId).push({ data: w, deliveries: 0 });
  }

  async *pullWork(
    appId: string,
    max: number,
    expiresMs: number,
    signal: AbortSignal,
  ): AsyncIterable<Delivery<RunWork>> {
    const q = this.queue(appId);
    const deadline = Date.now() + expiresMs;
    for (let n = 0; n < max; n++) {
      const left = deadline - Date.now();
      // An aborted pull takes nothing more, not even messages already waiting.
      if (left <= 0 || signal.aborted) return;
      // close() ends the queues, which ends this wait too.
      const entry = await q.take(signal, left);
      if (!entry) return;
      yield delivery(q, entry);
    }
  }

  private queue(appId: string): Queue<RunWork> {
    let q = this.work.get(appId);
    if (!q) this.work.set(appId, (q = new Queue()));
    return q;
  }

  async close(): Promise<void> {
    this.events.close();
    for (const q of this.work.values()) q.close();
  }
}

/** Delivers an announcement to every watcher on a later turn, like a message from another process. */
function announce<T>(watchers: ReadonlySet<(items: T[]) => void>, items: readonly T[]): void {
  if (items.length === 0) return;
  setImmediate(() => {
    for (const w of watchers) w([...items]);
  });
}

/** Adds a watcher until its subscription stops. */
async function watch<T>(watchers: Set<(items: T[]) => void>, on: (items: T[]) => void): Promise<Subscription> {
  const watcher = (items: T[]) => on(items);
  watchers.add(watcher);
  return {
    stop: async () => {
      watchers.delete(watcher);
    },
  };
}
