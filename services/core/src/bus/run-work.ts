import { create } from "@bufbuild/protobuf";
import { RunWorkSchema, type RunWork } from "@stepwise/proto";
import type { Bus } from "./bus.js";
import type { JournalStore } from "../journal/journal-store.js";
import type { PublishedRunRef, RunRef } from "../journal/types.js";
import { TurnBatch } from "@stepwise/proto";
import { workRetryOf } from "./work-retry.js";

/** Most runs one work message carries. */
export const MAX_RUNS_PER_WORK = 32;

/** The work messages of runs: one per app and function, of at most MAX_RUNS_PER_WORK runs each, in order. */
export function workMessages(runs: readonly RunRef[]): RunWork[] {
  const byFunction = new Map<string, RunRef[]>();
  for (const r of runs) {
    const key = `${r.appId}\u0000${r.functionId}`;
    let list = byFunction.get(key);
    if (!list) byFunction.set(key, (list = []));
    list.push(r);
  }
  const out: RunWork[] = [];
  for (const list of byFunction.values()) {
    for (let i = 0; i < list.length; i += MAX_RUNS_PER_WORK) {
      const chunk = list.slice(i, i + MAX_RUNS_PER_WORK);
      const [first] = chunk as [RunRef];
      out.push(
        create(RunWorkSchema, {
          runId: first.runId,
          appId: first.appId,
          functionId: first.functionId,
          moreRunIds: chunk.slice(1).map((r) => r.runId),
        }),
      );
    }
  }
  return out;
}

/** The ids of the runs a work message carries. */
export function workRunIds(work: RunWork): string[] {
  return [work.runId, ...work.moreRunIds];
}

/** Publishes the work of runs, in one message per function and batch of runs. */
export function publishRunWork(bus: Bus, runs: readonly RunRef[]): Promise<void> {
  return bus.publishWork(workMessages(runs));
}

/**
 * Publishes the work of QUEUED runs, then confirms it in the journal
 * (markPublished) so the reconciler leaves them alone until the backstop.
 * A publish the bus refuses is not an error of the caller's: the runs go to
 * the bus's WorkRetry, which publishes them as soon as the bus is back (and
 * should this process die first, the runs keep their short deadline and
 * the reconciler publishes them). Throws when the confirmation fails,
 * which leaves the deadline in place: at worst one more publish.
 */
export async function publishQueuedRuns(bus: Bus, store: JournalStore, runs: readonly PublishedRunRef[], backstopMs?: number): Promise<void> {
  if (runs.length === 0) return;
  try {
    await publishRunWork(bus, runs);
  } catch {
    void workRetryOf(bus).add(store, runs, backstopMs);
    return;
  }
  await store.markPublished(runs, backstopMs);
}

/**
 * Publishes run work for callers that each have a few runs: the runs
 * submitted in one turn of the event loop go out together, in one message
 * per function (the events of one batch, say, all made runs of the same
 * function), and each caller's promise resolves once its runs are stored.
 */
export class WorkPublisher {
  private readonly pending: TurnBatch<{ runs: readonly RunRef[]; resolve: () => void; reject: (err: unknown) => void }>;

  constructor(bus: Bus) {
    this.pending = new TurnBatch((batch) => {
      bus.publishWork(workMessages(batch.flatMap((b) => b.runs))).then(
        () => batch.forEach((b) => b.resolve()),
        (err: unknown) => batch.forEach((b) => b.reject(err)),
      );
    });
  }

  publish(runs: readonly RunRef[]): Promise<void> {
    if (runs.length === 0) return Promise.resolve();
    return new Promise<void>((resolve, reject) => this.pending.add({ runs, resolve, reject }));
  }
}
