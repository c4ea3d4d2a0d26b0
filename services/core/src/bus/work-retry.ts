import type { JournalStore } from "../journal/journal-store.js";
import type { PublishedRunRef } from "../journal/types.js";
import type { Logger } from "../runtime/log.js";
import type { Bus } from "./bus.js";
import { workMessages } from "./run-work.js";

/** First pause before a failed publish is tried again; it doubles to RETRY_MAX_MS. */
export const RETRY_FIRST_MS = 100;
/** Longest pause between two tries while the bus refuses. */
export const RETRY_MAX_MS = 1_000;
/**
 * Most runs kept for a retry. Past it the oldest are let go: they are
 * QUEUED in the journal with a deadline, and the reconciler publishes
 * their work then.
 */
export const RETRY_MAX_RUNS = 100_000;

interface Waiting {
  run: PublishedRunRef;
  store: JournalStore;
  backstopMs: number | undefined;
  /** Settled once the run's work is published (or let go). */
  settle: Array<(published: boolean) => void>;
}

/**
 * The work of QUEUED runs whose publish failed (NATS down, a stream
 * electing its leader), published again by this process as soon as the
 * bus takes it: first after RETRY_FIRST_MS, then at most RETRY_MAX_MS
 * apart, so a run waits for the bus to be back plus at most a second, not
 * for its requeue deadline. Once published the runs are confirmed in the
 * journal as any publish is. Should this process die first, the runs keep
 * their deadline and the reconciler publishes them then.
 */
export class WorkRetry {
  private readonly waiting = new Map<string, Waiting>();
  private timer: NodeJS.Timeout | undefined;
  private pauseMs = RETRY_FIRST_MS;
  private trying = false;

  constructor(
    private readonly bus: Bus,
    private readonly log?: Logger,
  ) {}

  /** Runs waiting for a retry. */
  get size(): number {
    return this.waiting.size;
  }

  /**
   * Keeps runs whose publish failed for the next try. Resolves once all of
   * them are published (false if some were let go past RETRY_MAX_RUNS);
   * a caller that can hand its runs on (the reconciler has them) need not
   * wait.
   */
  add(store: JournalStore, runs: readonly PublishedRunRef[], backstopMs: number | undefined): Promise<boolean> {
    const all: Array<Promise<boolean>> = [];
    for (const run of runs) {
      // A run kept already is replaced: the lease of its latest queueing is the one to confirm.
      const before = this.waiting.get(run.runId);
      this.waiting.delete(run.runId);
      const w: Waiting = { run, store, backstopMs, settle: before?.settle ?? [] };
      all.push(new Promise<boolean>((resolve) => w.settle.push(resolve)));
      this.waiting.set(run.runId, w);
    }
    for (const [id, w] of this.waiting) {
      if (this.waiting.size <= RETRY_MAX_RUNS) break;
      this.waiting.delete(id);
      for (const s of w.settle) s(false);
    }
    this.schedule();
    return Promise.all(all).then((done) => done.every(Boolean));
  }

  private schedule(): void {
    if (this.timer !== undefined || this.trying || this.waiting.size === 0) return;
    this.timer = setTimeout(() => void this.retry(), this.pauseMs);
    this.timer.unref();
  }

  private async retry(): Promise<void> {
    this.timer = undefined;
    this.trying = true;
    const batch = [...this.waiting.values()];
    try {
      await this.bus.publishWork(workMessages(batch.map((w) => w.run)));
    } catch (err) {
      this.pauseMs = Math.min(RETRY_MAX_MS, this.pauseMs * 2);
      this.log?.debug({ err, runs: batch.length }, "publishing run work failed again; trying once more shortly");
      this.trying = false;
      this.schedule();
      return;
    }
    for (const w of batch) {
      if (this.waiting.get(w.run.runId) === w) this.waiting.delete(w.run.runId);
      for (const s of w.settle.splice(0)) s(true);
    }
    this.pauseMs = RETRY_FIRST_MS;
    this.trying = false;
    this.log?.info({ runs: batch.length }, "published run work that had failed to publish");
    this.schedule();
    await confirm(batch);
  }
}

/** Confirms published runs in the journal, per store and backstop. */
async function confirm(batch: readonly Waiting[]): Promise<void> {
  const groups = new Map<JournalStore, Map<number | undefined, PublishedRunRef[]>>();
  for (const w of batch) {
    let byBackstop = groups.get(w.store);
    if (!byBackstop) groups.set(w.store, (byBackstop = new Map()));
    let runs = byBackstop.get(w.backstopMs);
    if (!runs) byBackstop.set(w.backstopMs, (runs = []));
    runs.push(w.run);
  }
  for (const [store, byBackstop] of groups) {
    for (const [backstopMs, runs] of byBackstop) {
      // Unconfirmed, a run keeps its deadline: the reconciler publishes it once more then, which is harmless.
      await store.markPublished(runs, backstopMs).catch(() => undefined);
    }
  }
}

const retries = new WeakMap<Bus, WorkRetry>();

/** The retry of a bus's failed work publishes, made on first use. */
export function workRetryOf(bus: Bus, log?: Logger): WorkRetry {
  let r = retries.get(bus);
  if (!r) retries.set(bus, (r = new WorkRetry(bus, log)));
  return r;
}
