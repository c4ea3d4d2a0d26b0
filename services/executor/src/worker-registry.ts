import type { WorkerSession } from "./worker-session.js";

/** The workers connected to this executor, by app. */
export class WorkerRegistry {
  private readonly byApp = new Map<string, Set<WorkerSession>>();

  add(session: WorkerSession): void {
    let set = this.byApp.get(session.appId);
    if (!set) this.byApp.set(session.appId, (set = new Set()));
    set.add(session);
  }

  remove(session: WorkerSession): void {
    const set = this.byApp.get(session.appId);
    set?.delete(session);
    if (set?.size === 0) this.byApp.delete(session.appId);
  }

  /** Free slots across an app's workers. */
  freeSlots(appId: string): number {
    let free = 0;
    for (const s of this.byApp.get(appId) ?? []) free += Math.max(0, s.free);
    return free;
  }

  /** The worker of an app serving a function with the most free slots, if any has one. */
  pick(appId: string, functionId: string): WorkerSession | undefined {
    let best: WorkerSession | undefined;
    for (const s of this.byApp.get(appId) ?? []) {
      if (s.free > 0 && s.functions.has(functionId) && (!best || s.free > best.free)) best = s;
    }
    return best;
  }

  /** Whether a worker of the app here serves the function, free or not. */
  serves(appId: string, functionId: string): boolean {
    for (const s of this.byApp.get(appId) ?? []) if (!s.closed && !s.draining && s.functions.has(functionId)) return true;
    return false;
  }

  all(): WorkerSession[] {
    return [...this.byApp.values()].flatMap((set) => [...set]);
  }
}
