import type { RunInfo, Stepwise } from "@stepwise/sdk";

/** A run that ended, and how long after its Send it was first read as ended. */
export interface EndedRun {
  run: RunInfo;
  /** From the start of the Send call to the answer that the run ended, in ms. */
  latencyMs: number;
}

/** Options of a RunWaiter. */
export interface RunWaiterOptions {
  /** Kept for the callers' tuning; the push answer needs no estimate. */
  initialEstimateMs: number;
  /** Unused with the push answer. */
  minIntervalMs?: number;
  /** How long a run may take before it counts as lost, in ms. */
  timeoutMs: number;
}

/** Longest single wait; a longer wait makes several. */
const MAX_CALL_MS = 300_000;

/**
 * Waits for runs to end as a user would: `Stepwise.waitForRuns` with the
 * event id that Send returned, all of the client's waits sharing one
 * RunService.WatchRuns stream. The engine answers when the executor
 * announces the run's end, so the client neither polls nor loads the
 * engine with a call per run, and the latency is the engine's plus one
 * answer.
 */
export class RunWaiter {
  /** Calls made, to report the load the client added. */
  reads = 0;

  constructor(
    private readonly client: Stepwise,
    private readonly options: RunWaiterOptions,
  ) {}

  /** Resolves once the run the event triggered has ended; rejects after the timeout. */
  async waitForEnd(eventId: string, sentAt: number): Promise<EndedRun> {
    const deadline = sentAt + this.options.timeoutMs;
    for (;;) {
      const left = Math.max(1, Math.min(MAX_CALL_MS, deadline - performance.now()));
      this.reads++;
      const { runs, done } = await this.client.waitForRuns(eventId, { timeoutMs: Math.ceil(left) });
      const now = performance.now();
      const [run] = runs;
      if (done && run !== undefined) return { run, latencyMs: now - sentAt };
      if (now >= deadline) throw new Error(`the run of event ${eventId} did not end within ${this.options.timeoutMs} ms`);
    }
  }
}
