import { create } from "@bufbuild/protobuf";
import type { Bus, JournalStore, Logger, RunRef } from "@stepwise/core";
import { RunWorkSchema, type EventRecord } from "@stepwise/proto";

/**
 * Handles one event from the event stream: persists it, creates one run per
 * function it triggers (idempotently, in the same statement), and publishes
 * the work of the new runs. The caller acks the event only after this
 * resolves, so a crash anywhere in between redelivers the event, and the
 * redelivery publishes the work of runs still QUEUED.
 */
export async function handleEvent(
  record: EventRecord,
  deps: { store: JournalStore; bus: Bus; backstopMs?: number },
): Promise<RunRef[]> {
  const runs = await deps.store.recordEvent(
    {
      id: record.id,
      name: record.name,
      dataJson: record.dataJson,
      tsMs: Number(record.tsMs),
      receivedAtMs: Number(record.receivedAtMs),
    },
    deps.backstopMs,
  );
  if (runs.length > 0) await publishRunWork(deps.bus, runs);
  return runs;
}

/** Publishes the work messages of runs. */
export function publishRunWork(bus: Bus, runs: readonly RunRef[]): Promise<void> {
  return bus.publishWork(
    runs.map((r) => create(RunWorkSchema, { runId: r.runId, appId: r.appId, functionId: r.functionId })),
  );
}

/**
 * The reconciler closes the gap between a Postgres commit and a NATS
 * publish: runs whose executor stopped renewing its lease, runs handed back
 * to the queue whose publish was not confirmed by their deadline, and, once
 * per long backstop, runs still waiting in the queue (in case the bus lost
 * their message) get their work published again. A duplicate work message
 * is harmless: claiming a run is idempotent.
 */
export class Reconciler {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;

  constructor(
    private readonly deps: {
      store: JournalStore;
      bus: Bus;
      log: Logger;
      requeueAfterMs: number;
      intervalMs: number;
      backstopMs?: number;
    },
  ) {}

  start(): void {
    const tick = () => {
      this.running = this.sweep()
        .then(() => undefined)
        .catch((err: unknown) => this.deps.log.warn({ err }, "reconciler sweep failed"))
        .finally(() => {
          this.running = undefined;
          if (this.timer !== undefined) this.timer = setTimeout(tick, this.deps.intervalMs);
        });
    };
    this.timer = setTimeout(tick, this.deps.intervalMs);
  }

  /** One sweep; returns how many runs got their work published again. */
  async sweep(): Promise<number> {
    let total = 0;
    for (;;) {
      const runs = await this.deps.store.reclaimStale(500, this.deps.requeueAfterMs);
      if (runs.length === 0) return total;
      await publishRunWork(this.deps.bus, runs);
      await this.deps.store.markPublished(runs, this.deps.backstopMs);
      total += runs.length;
      this.deps.log.info({ runs: runs.length }, "re-published work of stale runs");
      if (runs.length < 500) return total;
    }
  }

  async stop(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.running;
  }
}
