import type { Logger } from "@stepwise/core";
import type { WorkerSession } from "./worker-session.js";

/**
 * Keeps the executor's promises referenced until they settle, so that stop()
 * can wait for them and none is dropped: a dropped promise in the executor
 * is a lost step. A failure is logged.
 */
export class TaskTracker {
  private readonly tasks = new Set<Promise<unknown>>();

  constructor(private readonly log: Logger) {}

  /** Tracks a promise until it settles. */
  track(p: Promise<unknown>): void {
    const settled = p.then(
      () => undefined,
      (err: unknown) => this.log.error({ err }, "executor task failed"),
    );
    this.tasks.add(settled);
    void settled.finally(() => this.tasks.delete(settled));
  }

  /** Tracks a result being recorded for a session, so the session's end waits for it. */
  trackFor(session: WorkerSession, p: Promise<unknown>): void {
    session.pending.add(p);
    void p.then(
      () => session.pending.delete(p),
      () => session.pending.delete(p),
    );
    this.track(p);
  }

  /** The promises not yet settled. */
  pending(): Promise<unknown>[] {
    return [...this.tasks];
  }
}
