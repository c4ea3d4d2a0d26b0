import type { JournalStore, Logger } from "@stepwise/core";
import { describe, expect, it } from "vitest";
import { RetentionSweeper } from "./retention.js";

const log = { info: () => {}, warn: () => {} } as unknown as Logger;

describe("RetentionSweeper", () => {
  it("deletes batch after batch until one comes back short, runs first, then events", async () => {
    const calls: string[] = [];
    const runs = [3, 3, 1];
    const events = [2];
    const store = {
      deleteEndedRuns: (olderThanMs: number, limit: number) => {
        calls.push(`runs ${olderThanMs} ${limit}`);
        return Promise.resolve(runs.shift() ?? 0);
      },
      deleteUnreferencedEvents: (olderThanMs: number, limit: number) => {
        calls.push(`events ${olderThanMs} ${limit}`);
        return Promise.resolve(events.shift() ?? 0);
      },
    } as unknown as JournalStore;
    const sweeper = new RetentionSweeper({ store, log, retentionMs: 1_000, batch: 3 });
    expect(await sweeper.sweep()).toEqual({ runs: 7, events: 2 });
    expect(calls).toEqual(["runs 1000 3", "runs 1000 3", "runs 1000 3", "events 1000 3"]);
  });

  it("pauses after each full batch at least nine times as long as the batch took", async () => {
    const took = 60;
    const ends: number[] = [];
    const starts: number[] = [];
    let left = 3;
    const store = {
      deleteEndedRuns: async () => {
        starts.push(performance.now());
        await new Promise((r) => setTimeout(r, took));
        ends.push(performance.now());
        return left-- > 0 ? 10 : 0;
      },
      deleteUnreferencedEvents: () => Promise.resolve(0),
    } as unknown as JournalStore;
    const sweeper = new RetentionSweeper({ store, log, retentionMs: 1_000, batch: 10 });
    await sweeper.sweep();
    expect(starts).toHaveLength(4);
    // Timers may fire a millisecond early; the pause must be near 9 × 60 ms, not the 50 ms floor.
    for (let i = 1; i < starts.length; i++) expect(starts[i]! - ends[i - 1]!).toBeGreaterThanOrEqual(9 * took - 5);
  });

  it("sweeps on its interval once started, and stop() ends it", async () => {
    let sweeps = 0;
    const store = {
      deleteEndedRuns: () => {
        sweeps++;
        return Promise.resolve(0);
      },
      deleteUnreferencedEvents: () => Promise.resolve(0),
    } as unknown as JournalStore;
    const sweeper = new RetentionSweeper({ store, log, retentionMs: 1_000, sweepMs: 20 });
    sweeper.start();
    await new Promise((r) => setTimeout(r, 150));
    await sweeper.stop();
    const seen = sweeps;
    expect(seen).toBeGreaterThanOrEqual(2);
    await new Promise((r) => setTimeout(r, 60));
    expect(sweeps).toBe(seen);
  });
});
