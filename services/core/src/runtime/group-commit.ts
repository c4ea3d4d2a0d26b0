/**
 * Group commit: writes submitted while a write is in flight are gathered
 * and written together in the next one, so concurrent runs share Postgres
 * round trips and commits, while a write that finds nothing in flight
 * goes at once and waits for nobody.
 */
export class GroupCommit<T, R> {
  private queue: Array<{ item: T; resolve: (r: R) => void; reject: (e: unknown) => void }> = [];
  private inFlight = 0;
  private readonly maxBatch: number;
  private readonly maxInFlight: number;
  private readonly onBatch: ((size: number) => void) | undefined;

  /**
   * @param writeMany writes a batch, returning one result per item, in order.
   * @param writeOne writes one item; used for a batch that failed as a
   *   whole, so that one bad item fails alone.
   * @param options.maxBatch most items in one write (500).
   * @param options.maxInFlight writes at once. One by default: under W1 it
   *   gave 15-25% more runs/s than four, with 35% less Postgres CPU (fewer,
   *   larger statements), and no measurable cost in W2/W3 latency.
   * @param options.onBatch called with the size of each write, a lone
   *   item's included (the batch size metric).
   */
  constructor(
    private readonly writeMany: (items: T[]) => Promise<R[]>,
    private readonly writeOne: (item: T) => Promise<R>,
    options: { maxBatch?: number; maxInFlight?: number; onBatch?: ((size: number) => void) | undefined } = {},
  ) {
    this.maxBatch = options.maxBatch ?? 500;
    this.maxInFlight = options.maxInFlight ?? 1;
    this.onBatch = options.onBatch;
  }

  submit(item: T): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      this.flush();
    });
  }

  private flush(): void {
    while (this.queue.length > 0 && this.inFlight < this.maxInFlight) {
      const batch = this.queue.splice(0, this.maxBatch);
      this.inFlight++;
      void this.write(batch).finally(() => {
        this.inFlight--;
        this.flush();
      });
    }
  }

  private async write(batch: Array<{ item: T; resolve: (r: R) => void; reject: (e: unknown) => void }>): Promise<void> {
    this.onBatch?.(batch.length);
    if (batch.length === 1) {
      const [one] = batch as [(typeof batch)[number]];
      await this.writeOne(one.item).then(one.resolve, one.reject);
      return;
    }
    try {
      const results = await this.writeMany(batch.map((b) => b.item));
      batch.forEach((b, i) => b.resolve(results[i] as R));
    } catch {
      await Promise.all(batch.map((b) => this.writeOne(b.item).then(b.resolve, b.reject)));
    }
  }
}
