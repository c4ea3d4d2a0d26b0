import { ConnectError } from "@connectrpc/connect";

/**
 * The answers a server stream (WatchRuns, SendStream) has yet to send, and
 * whether the stream is over. The request side, read in the background,
 * pushes answers; the response side takes all that are ready, for one
 * message, with next(). The stream is over once closed (the client went
 * away, or the handler ended), or once the client ended its side and the
 * handler says nothing it still owes is left.
 */
export class AnswerQueue<T> {
  private items: T[] = [];
  private wakeWriter: (() => void) | undefined;
  private error: unknown;
  private requestsEnded = false;
  /** True once the stream is over for good: nothing pushed after is sent. */
  closed = false;

  /**
   * @param owesMore Whether answers are still owed (events watched, calls
   * in progress); the stream ends when it is false after the requests ended.
   * @param onTaken Called after next() took answers: room was made.
   */
  constructor(
    private readonly owesMore: () => boolean,
    private readonly onTaken?: () => void,
  ) {}

  /** Answers pushed and not yet taken. */
  get size(): number {
    return this.items.length;
  }

  push(item: T): void {
    if (this.closed) return;
    this.items.push(item);
    if (this.items.length === 1) this.wake();
  }

  /** The client ended its side of the stream. */
  endRequests(): void {
    this.requestsEnded = true;
    this.wake();
  }

  /** Reading the requests failed (a malformed request, say): next() throws it. */
  fail(err: unknown): void {
    this.error ??= err;
    this.wake();
  }

  close(): void {
    this.closed = true;
    this.wake();
  }

  /** Has next() look again: what owesMore() depends on changed. */
  wake(): void {
    const w = this.wakeWriter;
    this.wakeWriter = undefined;
    w?.();
  }

  /**
   * The answers to send next, once there are some; undefined once the
   * stream is over. With `gather`, answers that come later in the same turn
   * of the event loop are taken along.
   */
  async next(gather = false): Promise<T[] | undefined> {
    for (;;) {
      if (this.error !== undefined) throw ConnectError.from(this.error);
      if (this.closed) return undefined;
      if (this.items.length > 0) {
        if (gather) await new Promise<void>((r) => setImmediate(r));
        const items = this.items;
        this.items = [];
        this.onTaken?.();
        return items;
      }
      if (this.requestsEnded && !this.owesMore()) return undefined;
      await new Promise<void>((r) => (this.wakeWriter = r));
    }
  }
}
