import type { Bus, JournalStore, Logger, RunEnd, Subscription } from "@stepwise/core";

/** How often the waiters' events are checked in the journal, all in one query, in case an announcement was lost. */
export const RECHECK_MS = 1_000;

/** Most event ids one recheck query carries; more waiters take several queries. */
const RECHECK_BATCH = 5_000;

/**
 * RunWaiters wakes RunService.WaitForRuns calls when the executor announces
 * that a run of their event ended, instead of having them poll. The
 * announcements are at most once, so while anyone waits, one query a
 * second checks every waited event at once (not one query per waiter) and
 * wakes those whose runs all ended. It subscribes on first use.
 */
export class RunWaiters {
  private readonly byEvent = new Map<string, Set<(end?: RunEnd) => void>>();
  private subscription: Promise<Subscription> | undefined;
  private recheck: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    private readonly bus: Bus,
    private readonly store: JournalStore,
    private readonly log?: Logger,
  ) {}

  /**
   * `woken` resolves when a run of the event is announced ended (or found
   * ended by the recheck), after maxMs, or when the signal aborts, whichever
   * comes first; cancel() drops the waiter. Register before reading the
   * journal (after ready()), so no end falls in between.
   */
  next(eventId: string, maxMs: number, signal: AbortSignal): { woken: Promise<void>; cancel: () => void } {
    let cancel = () => {};
    const woken = new Promise<void>((resolve) => {
      let set = this.byEvent.get(eventId);
      if (!set) this.byEvent.set(eventId, (set = new Set()));
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        set.delete(done);
        if (set.size === 0 && this.byEvent.get(eventId) === set) this.byEvent.delete(eventId);
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, maxMs));
      signal.addEventListener("abort", done, { once: true });
      set.add(done);
      cancel = done;
    });
    if (!this.stopped) this.recheck ??= setTimeout(() => void this.recheckAll(), RECHECK_MS);
    return { woken, cancel };
  }

  /**
   * Calls onEnd whenever a run of the event is announced ended (with the
   * announcement), or the recheck finds all of its runs ended (without),
   * until the returned function is called. Register before reading the
   * journal (after ready()).
   */
  watch(eventId: string, onEnd: (end?: RunEnd) => void): () => void {
    let set = this.byEvent.get(eventId);
    if (!set) this.byEvent.set(eventId, (set = new Set()));
    const cb = (end?: RunEnd) => onEnd(end);
    set.add(cb);
    if (!this.stopped) this.recheck ??= setTimeout(() => void this.recheckAll(), RECHECK_MS);
    return () => {
      set.delete(cb);
      if (set.size === 0 && this.byEvent.get(eventId) === set) this.byEvent.delete(eventId);
    };
  }

  /** Subscribes to the announcements, once. */
  ready(): Promise<Subscription> {
    this.subscription ??= this.bus.watchRunsEnded((runs) => this.onEnded(runs));
    return this.subscription;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.recheck);
    await (await this.subscription)?.stop();
  }

  private onEnded(runs: readonly RunEnd[]): void {
    for (const r of runs) this.wake(r.eventId, r);
  }

  private wake(eventId: string, end?: RunEnd): void {
    const set = this.byEvent.get(eventId);
    if (set) for (const wake of [...set]) wake(end);
  }

  /** One look at every waited event; then again in RECHECK_MS while anyone waits. */
  private async recheckAll(): Promise<void> {
    try {
      const ids = [...this.byEvent.keys()];
      for (let i = 0; i < ids.length; i += RECHECK_BATCH) {
        for (const id of await this.store.endedEvents(ids.slice(i, i + RECHECK_BATCH))) this.wake(id);
      }
    } catch (err) {
      this.log?.warn({ err }, "rechecking waited runs failed");
    } finally {
      this.recheck = this.byEvent.size > 0 && !this.stopped ? setTimeout(() => void this.recheckAll(), RECHECK_MS) : undefined;
    }
  }
}
