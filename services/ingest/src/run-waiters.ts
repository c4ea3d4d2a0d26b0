import type { Bus, RunEnd, Subscription } from "@stepwise/core";

/**
 * When a waiter first looks at the journal again with no announcement; it
 * doubles after each look, up to MAX_RECHECK_MS.
 */
export const RECHECK_MS = 1_000;
/** Longest gap between two looks of a waiter. */
export const MAX_RECHECK_MS = 16_000;

/**
 * RunWaiters wakes RunService.WaitForRuns calls when the executor announces
 * that a run of their event ended, instead of having them poll. The
 * announcements are at most once, so a waiter also checks again after
 * RECHECK_MS, then less and less often. It subscribes on first use.
 */
export class RunWaiters {
  private readonly byEvent = new Map<string, Set<() => void>>();
  private subscription: Promise<Subscription> | undefined;

  constructor(private readonly bus: Bus) {}

  /**
   * `woken` resolves when a run of the event is announced ended, after
   * maxMs, or when the signal aborts, whichever comes first; cancel() drops
   * the waiter. Subscribe (await
   * ready()) before reading the journal, so no end falls in between.
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
    return { woken, cancel };
  }

  /** Subscribes to the announcements, once. */
  ready(): Promise<Subscription> {
    this.subscription ??= this.bus.watchRunsEnded((runs) => this.onEnded(runs));
    return this.subscription;
  }

  async stop(): Promise<void> {
    await (await this.subscription)?.stop();
  }

  private onEnded(runs: RunEnd[]): void {
    for (const r of runs) {
      const set = this.byEvent.get(r.eventId);
      if (set) for (const wake of [...set]) wake();
    }
  }
}
