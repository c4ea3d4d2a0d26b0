/**
 * A request stream for a Connect client: an async generator, whose return()
 * and throw() give promises as Connect expects (a pushable's do not).
 */
export async function* requestStream<T>(messages: AsyncIterable<T>): AsyncGenerator<T> {
  yield* messages;
}

/**
 * How long a stream of the client (WatchRuns, SendStream) stays open with
 * nothing in progress, so that calls made one after the other share it
 * instead of opening a stream each. An open stream keeps the process alive:
 * `Stepwise.close()` ends it at once.
 */
export const STREAM_LINGER_MS = 250;

/** Ends an idle stream after STREAM_LINGER_MS, unless it is used again first. */
export class StreamLinger {
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly end: () => void) {}

  /** The stream went idle: end it after the linger. */
  idle(): void {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.end();
    }, STREAM_LINGER_MS);
  }

  /** The stream is in use again. */
  busy(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}
