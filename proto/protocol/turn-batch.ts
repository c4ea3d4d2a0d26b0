/**
 * Gathers the items added during one turn of the event loop and hands them
 * over together, in order, once the turn's callbacks and promise
 * continuations have run (setImmediate). For messages that many runs
 * produce at once (the acks of one journal write, the work of one batch of
 * events): one message, publish or write per turn instead of one per item.
 */
export class TurnBatch<T> {
  private items: T[] = [];

  constructor(private readonly flush: (items: T[]) => void) {}

  add(item: T): void {
    this.items.push(item);
    if (this.items.length === 1) setImmediate(() => this.flushNow());
  }

  /** Hands over what is gathered now (before a stream closes, say); nothing when empty. */
  flushNow(): void {
    if (this.items.length === 0) return;
    const items = this.items;
    this.items = [];
    this.flush(items);
  }
}
