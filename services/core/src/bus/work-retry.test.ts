import { describe, expect, it } from "vitest";
import type { RunWork } from "@stepwise/proto";
import type { JournalStore } from "../journal/journal-store.js";
import type { PublishedRunRef } from "../journal/types.js";
import { MemoryBus } from "./memory-bus.js";
import { publishQueuedRuns, workRunIds } from "./run-work.js";
import { RETRY_MAX_MS, workRetryOf } from "./work-retry.js";

/** A MemoryBus whose work publishes fail while `down` is set. */
class FlakyBus extends MemoryBus {
  down = false;
  attempts = 0;
  override async publishWork(work: readonly RunWork[]): Promise<void> {
    this.attempts++;
    if (this.down) throw new Error("NATS is down");
    return super.publishWork(work);
  }
}

/** The one method of the journal the retry uses: markPublished, recorded. */
function confirmingStore(): { store: JournalStore; confirmed: Array<{ ids: string[]; backstopMs: number | undefined }> } {
  const confirmed: Array<{ ids: string[]; backstopMs: number | undefined }> = [];
  const store = {
    markPublished: async (runs: readonly PublishedRunRef[], backstopMs?: number) => {
      confirmed.push({ ids: runs.map((r) => r.runId), backstopMs });
    },
  } as unknown as JournalStore;
  return { store, confirmed };
}

const run = (i: number, lease = 1): PublishedRunRef => ({ runId: `r${i}`, appId: "app", functionId: "f", lease });

async function pulled(bus: MemoryBus): Promise<string[]> {
  const ids: string[] = [];
  for await (const d of bus.pullWork("app", 100, 50, new AbortController().signal)) {
    ids.push(...workRunIds(d.data));
    d.ack();
  }
  return ids;
}

describe("WorkRetry", () => {
  it("publishes the work a refused publish left as soon as the bus takes it again, then confirms it", async () => {
    const bus = new FlakyBus();
    const { store, confirmed } = confirmingStore();
    bus.down = true;
    // The caller is not failed: the runs are the retry's now.
    await publishQueuedRuns(bus, store, [run(1), run(2)], 5_000);
    await publishQueuedRuns(bus, store, [run(3)], 5_000);
    expect(workRetryOf(bus).size).toBe(3);
    expect(confirmed).toEqual([]);
    // Tries again while the bus is down, at most RETRY_MAX_MS apart.
    await new Promise((r) => setTimeout(r, 1_000));
    const tried = bus.attempts;
    expect(tried).toBeGreaterThan(3);
    bus.down = false;
    const back = Date.now();
    while (workRetryOf(bus).size > 0) await new Promise((r) => setTimeout(r, 10));
    expect(Date.now() - back).toBeLessThanOrEqual(RETRY_MAX_MS + 200);
    expect((await pulled(bus)).sort()).toEqual(["r1", "r2", "r3"]);
    await new Promise((r) => setTimeout(r, 20));
    expect(confirmed.flatMap((c) => c.ids).sort()).toEqual(["r1", "r2", "r3"]);
    expect(confirmed.every((c) => c.backstopMs === 5_000)).toBe(true);
    await bus.close();
  });

  it("keeps one entry a run, with the lease of its latest queueing", async () => {
    const bus = new FlakyBus();
    const { store, confirmed } = confirmingStore();
    bus.down = true;
    await publishQueuedRuns(bus, store, [run(1, 1)]);
    await publishQueuedRuns(bus, store, [run(1, 2)]);
    expect(workRetryOf(bus).size).toBe(1);
    bus.down = false;
    while (workRetryOf(bus).size > 0) await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, 20));
    expect(await pulled(bus)).toEqual(["r1"]);
    expect(confirmed).toEqual([{ ids: ["r1"], backstopMs: undefined }]);
    await bus.close();
  });

  it("publishes at once, with no retry, when the bus takes the work", async () => {
    const bus = new FlakyBus();
    const { store, confirmed } = confirmingStore();
    await publishQueuedRuns(bus, store, [run(7)]);
    expect(workRetryOf(bus).size).toBe(0);
    expect(bus.attempts).toBe(1);
    expect(confirmed).toEqual([{ ids: ["r7"], backstopMs: undefined }]);
    await bus.close();
  });
});
