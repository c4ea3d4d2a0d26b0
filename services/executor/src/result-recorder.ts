import {
  GroupCommit,
  type AttemptRecord,
  type JournalOutcome,
  type JournalStore,
  type Logger,
  type PublishedRunRef,
  type RunCompletion,
  type RunFailure,
  type ServiceMetrics,
  type StepRecord,
  type StoredError,
} from "@stepwise/core";
import type { RunEnding } from "./worker-protocol.js";

/**
 * Records what workers report in the journal: step results (first write
 * wins, fenced by the lease) and how runs ended. Writes are retried through
 * short Postgres outages, up to the lease; a result Postgres refuses as data
 * is replaced by a non-retriable error, so the run moves on instead of
 * failing the same write forever.
 */
export class ResultRecorder {
  private readonly steps: GroupCommit<StepRecord, JournalOutcome>;
  private readonly completions: GroupCommit<{ runId: string; lease: number; outputJson: string }, RunCompletion | null>;

  constructor(
    private readonly store: JournalStore,
    private readonly log: Logger,
    private readonly leaseMs: number,
    private readonly stopping: () => boolean,
    private readonly requeueAfterMs = 60_000,
    metrics?: ServiceMetrics,
  ) {
    this.steps = new GroupCommit(
      (records) => store.journalSteps(records),
      (record) => store.journalStep(record),
      { onBatch: metrics?.journal.batchSize("step") },
    );
    this.completions = new GroupCommit(
      (runs) => store.completeRuns(runs, requeueAfterMs),
      (r) => store.completeRun(r.runId, r.lease, r.outputJson, requeueAfterMs),
      { onBatch: metrics?.journal.batchSize("completion") },
    );
  }

  /**
   * Journals a step result. "lease-lost" when this execution must not
   * proceed: another one took over, or the journal stayed unreachable.
   */
  async recordStep(record: StepRecord): Promise<JournalOutcome> {
    // Large results go alone: a batch of them would make one huge statement.
    const alone = (record.outputJson?.length ?? 0) > BATCHED_RESULT_MAX_CHARS;
    let outcome = await this.withRetry(() => (alone ? this.store.journalStep(record) : this.steps.submit(record)));
    if (outcome instanceof UnstorableResult) {
      const substitute: StoredError = { name: "UnstorableStepResult", message: outcome.message, nonRetriable: true };
      outcome = await this.withRetry(() => this.store.journalStep({ ...record, outputJson: undefined, error: substitute }));
      // The worker must continue with what the journal holds, not what it sent.
      if (outcome && !(outcome instanceof UnstorableResult) && outcome.kind === "journaled") {
        return { kind: "existing", entry: { stepKey: record.stepKey, error: substitute } };
      }
    }
    if (!outcome || outcome instanceof UnstorableResult) return { kind: "lease-lost" };
    return outcome;
  }

  /**
   * Journals a failed attempt that will be retried. False when this
   * execution must not proceed (lease lost, or the journal stayed
   * unreachable).
   */
  async recordAttempt(a: AttemptRecord): Promise<boolean> {
    let ok = await this.withRetry(() => this.store.journalAttempt(a));
    if (ok instanceof UnstorableResult) {
      const substitute: StoredError = { name: a.error.name.slice(0, 200), message: ok.message };
      ok = await this.withRetry(() => this.store.journalAttempt({ ...a, error: substitute }));
    }
    return ok === true;
  }

  /**
   * Records how a run ended: `ended` when it did now, with its end time
   * when it completed, the run of its onFailure handler when one was
   * created, and the runs that invoked it that its end woke (`queued`
   * holds both, to publish). A failure to record is logged: the lease then
   * lapses and the run executes again, replaying its journal. A statement
   * that fails (a deadlock with a cancel of the run's parent, say) is
   * retried within the lease.
   */
  async recordEnd(
    runId: string,
    lease: number,
    end: RunEnding,
  ): Promise<{ ended: boolean; completedAtMs?: number | undefined; queued: PublishedRunRef[] }> {
    const fail = (error: StoredError) => this.store.failRun(runId, lease, error, this.requeueAfterMs);
    let completedAtMs: number | undefined;
    let outcome = await this.withRetry(async (): Promise<RunFailure> => {
      if (end.kind === "failed") return await fail(end.error);
      const completed = await this.complete(runId, lease, end.outputJson);
      completedAtMs = completed?.endedAtMs;
      return { ok: completed !== null, failureRun: undefined, wokenRuns: completed?.wokenRuns ?? [] };
    });
    if (outcome instanceof UnstorableResult) {
      const substitute: StoredError = { name: "UnstorableRunResult", message: outcome.message, nonRetriable: true };
      outcome = await this.withRetry(() => fail(substitute));
    }
    if (outcome === undefined || outcome instanceof UnstorableResult) {
      this.log.warn({ run: runId }, "recording the end of a run failed; its lease lapses and it runs again");
      return { ended: false, queued: [] };
    }
    const queued = outcome.failureRun ? [outcome.failureRun, ...outcome.wokenRuns] : outcome.wokenRuns;
    return { ended: outcome.ok, completedAtMs, queued };
  }

  /** Completes a run, in a group commit unless its output is large; null when the lease was lost. */
  private complete(runId: string, lease: number, outputJson: string): Promise<RunCompletion | null> {
    if (outputJson.length > BATCHED_RESULT_MAX_CHARS) return this.store.completeRun(runId, lease, outputJson, this.requeueAfterMs);
    return this.completions.submit({ runId, lease, outputJson });
  }

  /**
   * Runs a journal write, retried through short outages within the lease.
   * Undefined when it never succeeded.
   */
  async retrying<T>(fn: () => Promise<T>): Promise<T | undefined> {
    const out = await this.withRetry(fn);
    return out instanceof UnstorableResult ? undefined : out;
  }

  /**
   * Retries a journal write through short outages, within the lease.
   * Undefined if it never succeeded; UnstorableResult, without retrying, if
   * Postgres refused the data itself.
   */
  private async withRetry<T>(fn: () => Promise<T>): Promise<T | UnstorableResult | undefined> {
    const deadline = Date.now() + this.leaseMs;
    for (let delay = 50; ; delay = Math.min(delay * 2, 2000)) {
      try {
        return await fn();
      } catch (err) {
        if (isDataException(err)) {
          this.log.warn({ err }, "Postgres refused a result");
          return new UnstorableResult(err);
        }
        if (Date.now() + delay > deadline || this.stopping()) {
          this.log.error({ err }, "journal write failed");
          return undefined;
        }
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }
}

/** Step results longer than this (JSON characters) are journaled on their own, not in a group commit. */
const BATCHED_RESULT_MAX_CHARS = 64 * 1024;

/** A result Postgres refused as data (SQLSTATE class 22), which no retry can store. */
class UnstorableResult {
  readonly message: string;
  constructor(err: unknown) {
    const detail = err instanceof Error ? err.message : String(err);
    this.message = `the result could not be journaled: ${detail}`;
  }
}

function isDataException(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "string" && code.startsWith("22");
}
