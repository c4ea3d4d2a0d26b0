import { describe, expect, it } from "vitest";
import { GroupCommit } from "./group-commit.js";

/** A write that resolves when the test says so, recording the batches it got. */
function controlledWrites() {
  const batches: number[][] = [];
  const pending: Array<() => void> = [];
  const writeMany = (items: number[]) => {
    batches.push(items);
    return new Promise<number[]>((resolve) => pending.push(() => resolve(items.map((i) => i * 10))));
  };
  const writeOne = (item: number) => writeMany([item]).then((r) => r[0]!);
  return { batches, pending, writeMany, writeOne };
}

const tick = () => new Promise((r) => setImmediate(r));

describe("GroupCommit", () => {
  it("writes at once when nothing is in flight, and gathers what arrives meanwhile into the next write", async () => {
    const w = controlledWrites();
    const gc = new GroupCommit(w.writeMany, w.writeOne, { maxBatch: 100, maxInFlight: 1 });
    const first = gc.submit(1);
    expect(w.batches).toEqual([[1]]);
    const rest = [2, 3, 4].map((i) => gc.submit(i));
    expect(w.batches).toHaveLength(1);
    w.pending.shift()!();
    expect(await first).toBe(10);
    await tick();
    expect(w.batches).toEqual([[1], [2, 3, 4]]);
    w.pending.shift()!();
    expect(await Promise.all(rest)).toEqual([20, 30, 40]);
  });

  it("keeps batches within maxBatch and writes at most maxInFlight at once", async () => {
    const w = controlledWrites();
    const gc = new GroupCommit(w.writeMany, w.writeOne, { maxBatch: 2, maxInFlight: 2 });
    const all = [1, 2, 3, 4, 5, 6, 7].map((i) => gc.submit(i));
    expect(w.batches).toEqual([[1], [2]]);
    w.pending.shift()!();
    await tick();
    expect(w.batches).toEqual([[1], [2], [3, 4]]);
    while (w.pending.length > 0) {
      w.pending.shift()!();
      await tick();
    }
    expect(await Promise.all(all)).toEqual([10, 20, 30, 40, 50, 60, 70]);
    expect(w.batches.every((b) => b.length <= 2)).toBe(true);
  });

  it("writes the items of a failed batch one by one, so only the bad one fails", async () => {
    const gc = new GroupCommit<number, number>(
      async (items) => {
        if (items.includes(13)) throw new Error("refused as data");
        return items;
      },
      async (item) => {
        if (item === 13) throw new Error(`item ${item} refused`);
        return item;
      },
      { maxBatch: 100, maxInFlight: 1 },
    );
    const block = gc.submit(0);
    const results = Promise.allSettled([12, 13, 14].map((i) => gc.submit(i)));
    await block;
    const settled = await results;
    expect(settled.map((s) => s.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
    expect((settled[1] as PromiseRejectedResult).reason).toBeInstanceOf(Error);
  });

  it("reports the size of every write, a lone item's included", async () => {
    const sizes: number[] = [];
    const gc = new GroupCommit<number, number>(
      async (items) => items,
      async (item) => item,
      { maxBatch: 3, onBatch: (n) => sizes.push(n) },
    );
    const block = gc.submit(0);
    const rest = [1, 2, 3, 4, 5].map((i) => gc.submit(i));
    await Promise.all([block, ...rest]);
    expect(sizes).toEqual([1, 3, 2]);
  });
});
