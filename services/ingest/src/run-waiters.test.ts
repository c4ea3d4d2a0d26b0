import { MemoryBus, type JournalStore } from "@stepwise/core";
import { afterEach, describe, expect, it } from "vitest";
import { RECHECK_MS, RunWaiters } from "./run-waiters.js";

/** A journal whose ended events the test sets, counting the queries. */
function fakeStore() {
  const ended = new Set<string>();
  const queries: string[][] = [];
  const store = {
    async endedEvents(ids: readonly string[]) {
      queries.push([...ids]);
      return ids.filter((id) => ended.has(id));
    },
  } as unknown as JournalStore;
  return { store, ended, queries };
}

describe("RunWaiters", () => {
  const buses: MemoryBus[] = [];
  afterEach(async () => {
    for (const b of buses.splice(0)) await b.close();
  });

  it("wakes the waiters of an event on its announcement, and only them", async () => {
    const bus = new MemoryBus();
    buses.push(bus);
    const { store } = fakeStore();
    const waiters = new RunWaiters(bus, store);
    await waiters.ready();
    const signal = new AbortController().signal;
    const a = waiters.next("ev-a", 60_000, signal);
    const b = waiters.next("ev-b", 60_000, signal);
    let bWoken = false;
    void b.woken.then(() => (bWoken = true));
    const t0 = Date.now();
    bus.announceRunsEnded([{ runId: "r1", eventId: "ev-a" }]);
    await a.woken;
    expect(Date.now() - t0).toBeLessThan(200);
    expect(bWoken).toBe(false);
    b.cancel();
    await waiters.stop();
  });

  it("finds a run end whose announcement was lost with one query for all waiters", async () => {
    const bus = new MemoryBus();
    buses.push(bus);
    const { store, ended, queries } = fakeStore();
    const waiters = new RunWaiters(bus, store);
    await waiters.ready();
    const signal = new AbortController().signal;
    const many = Array.from({ length: 50 }, (_, i) => waiters.next(`ev-${i}`, 60_000, signal));
    ended.add("ev-7");
    const t0 = Date.now();
    await many[7]!.woken;
    expect(Date.now() - t0).toBeLessThan(RECHECK_MS + 500);
    expect(queries).toHaveLength(1);
    expect(queries[0]).toHaveLength(50);
    for (const w of many) w.cancel();
    await waiters.stop();
  });

  it("ends a wait at its deadline and on abort", async () => {
    const bus = new MemoryBus();
    buses.push(bus);
    const waiters = new RunWaiters(bus, fakeStore().store);
    const t0 = Date.now();
    await waiters.next("ev", 100, new AbortController().signal).woken;
    expect(Date.now() - t0).toBeGreaterThanOrEqual(90);
    const abort = new AbortController();
    const w = waiters.next("ev", 60_000, abort.signal);
    abort.abort();
    await w.woken;
    await waiters.stop();
  });
});
