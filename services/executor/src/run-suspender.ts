import {
  announceCancelled,
  type Bus,
  cancelOnEarlierEvents,
  waitMatches,
  waitOutputJson,
  type AwaitRecord,
  type InvokeAwait,
  type JournalStore,
  LOOKBACK_PAGE,
  type LookbackCandidate,
  type Logger,
  type PublishedRunRef,
  type StoredError,
  type TimerStore,
  type WaitMatch,
  type WaitStore,
} from "@stepwise/core";
import type { ResultRecorder } from "./result-recorder.js";
import type { Suspension } from "./worker-protocol.js";
import type { HeldRun } from "./worker-session.js";

/** What the suspender needs from the executor. */
export interface RunSuspenderOptions {
  store: JournalStore;
  bus: Bus;
  timers: TimerStore;
  waits: WaitStore;
  recorder: ResultRecorder;
  log: Logger;
  requeueAfterMs: number;
  /** Publishes the work of runs queued again (with the short deadline until confirmed). */
  publish: (runs: PublishedRunRef[]) => Promise<void>;
}

/**
 * Records what suspended runs wait for: the runs they invoke, then their
 * timers and waits, in one statement; queues them again at once when what
 * they wait for already happened; and looks back for events that arrived
 * while a wait was being recorded.
 */
export class RunSuspender {
  constructor(private readonly options: RunSuspenderOptions) {}

  /**
   * Handles a worker's suspension, as the worker protocol decoded it. "requeue" when the run must instead
   * go back to the queue at once (an await was refused and its step now
   * holds the error); an error when the message cannot be honoured at all
   * (no awaits, keys missing or repeated, too many awaits), which would come
   * back identical on every replay: the run fails with it.
   */
  async onSuspend(held: HeldRun, parsed: Suspension): Promise<"suspended" | "requeue" | StoredError> {
    if ("refused" in parsed) {
      this.options.log.warn({ reason: parsed.refused, run: held.runId }, "a worker sent a suspension that cannot be honoured; the run fails");
      return { name: "InvalidSuspension", message: parsed.refused, nonRetriable: true };
    }
    if (parsed.invalid.length > 0) {
      // Each invalid await fails its step for good; the run resumes and the
      // handler sees a StepError there.
      for (const bad of parsed.invalid) {
        const now = Date.now();
        await this.options.recorder.recordStep({
          runId: held.runId,
          lease: held.lease,
          stepKey: bad.stepKey,
          stepId: bad.stepId,
          attempt: 1,
          startedAtMs: now,
          endedAtMs: now,
          error: { name: bad.name || "Error", message: bad.message, nonRetriable: true },
        });
      }
      return "requeue";
    }
    await this.suspend(held, parsed.awaits);
    return "suspended";
  }

  /**
   * Suspends a held run on awaits. The runs it invokes are started first
   * (one statement, only when it invokes some), and their work published
   * after the suspension. If what it waits for already happened it is
   * queued again at once; an event it waits for that arrived while the
   * wait was being recorded is found by the lookback. Unrecorded (the
   * journal stayed unreachable), the lease lapses and the reconciler hands
   * the run on, and its next execution suspends again.
   */
  async suspend(held: HeldRun, awaits: AwaitRecord[]): Promise<void> {
    const { store, timers, requeueAfterMs, recorder } = this.options;
    const invokes = awaits.filter((a): a is InvokeAwait => a.kind === "invoke");
    let children: PublishedRunRef[] = [];
    if (invokes.length > 0) {
      const started = await recorder.retrying(() => store.startInvocations(held.runId, held.lease, invokes, requeueAfterMs));
      if (!started || started.kind === "lease-lost") return;
      children = started.runs;
    }
    const outcome = await recorder.retrying(() => timers.suspend(held.runId, held.lease, held.wakes, awaits, requeueAfterMs));
    await this.options.publish(children);
    if (children.length > 0) await this.afterInvoking(held, children, outcome?.kind === "lease-lost");
    if (!outcome || outcome.kind === "lease-lost") return;
    if (outcome.kind === "resumed") {
      await this.options.publish([outcome.run]);
      return;
    }
    await this.lookBack(held, awaits);
  }

  /**
   * What follows the creation of invoked runs: their cancelOn rules look
   * back for the events stored already, as for every run made outside the
   * event stream. When the suspension found the run no longer held, a
   * cancel of it may have waited for its lock while the children were
   * created, and not seen them: those of a CANCELLED run are cancelled
   * now.
   */
  private async afterInvoking(held: HeldRun, children: readonly PublishedRunRef[], leaseLost: boolean): Promise<void> {
    const deps = { store: this.options.store, bus: this.options.bus, log: this.options.log };
    await cancelOnEarlierEvents(deps, children.map((c) => c.runId));
    if (!leaseLost) return;
    const cancelled = await this.options.recorder.retrying(() => this.options.store.cancelInvokedRuns(held.runId));
    if (cancelled && cancelled.length > 0) await announceCancelled(deps, cancelled);
  }

  /** Resolves the waits of a suspension that events stored since they began already match. */
  private async lookBack(held: HeldRun, awaits: AwaitRecord[]): Promise<void> {
    const { waits, requeueAfterMs, recorder } = this.options;
    const waitCount = awaits.filter((a) => a.kind === "wait").length;
    if (waitCount === 0) return;
    // Page through the events stored since the waits began until each wait
    // has its first match or the events run out.
    const matches = new Map<string, WaitMatch>();
    let after: LookbackCandidate | undefined;
    for (;;) {
      const cursor = after;
      const page = await recorder.retrying(() => waits.lookback(held.runId, cursor));
      if (!page) return;
      for (const c of page) {
        if (matches.has(c.stepKey) || !waitMatches(c.condition, c.runEvent, c.event)) continue;
        matches.set(c.stepKey, { runId: held.runId, stepKey: c.stepKey, outputJson: waitOutputJson(c.event) });
      }
      if (page.length < LOOKBACK_PAGE || matches.size === waitCount) break;
      after = page[page.length - 1];
    }
    if (matches.size === 0) return;
    const woken = await recorder.retrying(() => waits.resolve([...matches.values()], requeueAfterMs));
    if (woken && woken.length > 0) await this.options.publish(woken);
  }
}
