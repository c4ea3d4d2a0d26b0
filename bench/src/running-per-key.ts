/**
 * Counts the handler bodies executing at once per key, in the worker
 * process, and the peak each key reached. The worker is one process and
 * JavaScript runs one handler at a time, so an exact count needs no clock:
 * a handler body counts from its first line until it returns or throws,
 * across the awaits of its steps (the SDK keeps a run's handler in memory
 * between steps). That span lies inside the time the engine lets the run
 * hold a slot (it starts after the run was claimed and ends before the
 * run's end is recorded), so a peak over the limit means the limit was
 * broken.
 */
export class RunningPerKey {
  private readonly running = new Map<string, number>();
  private peaks = new Map<string, number>();

  /** Counts one more handler body of `key`; call the function it returns when the body ends. */
  enter(key: string): () => void {
    const now = (this.running.get(key) ?? 0) + 1;
    this.running.set(key, now);
    if (now > (this.peaks.get(key) ?? 0)) this.peaks.set(key, now);
    let left = false;
    return () => {
      if (left) return;
      left = true;
      const after = (this.running.get(key) ?? 1) - 1;
      if (after === 0) this.running.delete(key);
      else this.running.set(key, after);
    };
  }

  /**
   * The peak of each key since the last take, and starts the next period
   * from the bodies executing now.
   */
  take(): Record<string, number> {
    const peaks = Object.fromEntries(this.peaks);
    this.peaks = new Map(this.running);
    return peaks;
  }
}
