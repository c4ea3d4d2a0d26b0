import type { Bus, ClaimedRun, CompletedRun, RunEnd } from "@stepwise/core";
import { TurnBatch } from "@stepwise/proto";

/**
 * Longest event data and output (JSON text) an announcement of a completed
 * run carries; past it, waiters read the run from the journal instead of
 * every ingest receiving large payloads.
 */
const ANNOUNCED_JSON_MAX_CHARS = 16 * 1024;

/** What the announcement of a run's completion carries besides its end time and output. */
export type Completion = Omit<CompletedRun, "endedAtMs" | "outputJson">;

/**
 * Announces the runs that ended to RunService waiters (ingest), the ends of
 * one turn in one message; a completed run with what a waiter needs to
 * answer without reading the journal, when it is small enough to carry.
 */
export class RunAnnouncer {
  private readonly ended: TurnBatch<RunEnd>;

  constructor(bus: Bus) {
    this.ended = new TurnBatch((runs) => bus.announceRunsEnded(runs));
  }

  /**
   * What a claimed run's completion will carry; undefined when its event is
   * too large to carry, or when the run was made by a rerun or a replay
   * (whose origin the announcement does not carry: waiters read it).
   */
  completionOf(claimed: ClaimedRun): Completion | undefined {
    if (claimed.derived || claimed.event.dataJson.length > ANNOUNCED_JSON_MAX_CHARS) return undefined;
    return {
      appId: claimed.appId,
      functionId: claimed.functionId,
      eventName: claimed.event.name,
      eventDataJson: claimed.event.dataJson,
      eventTsMs: claimed.event.tsMs,
      createdAtMs: claimed.createdAtMs,
      startedAtMs: claimed.startedAtMs,
      attempts: claimed.lease,
      eventRuns: claimed.eventRuns,
    };
  }

  /** Announces a run that ended; with its completion when it completed at `endedAtMs` with `outputJson`. */
  announce(runId: string, eventId: string, completion?: Completion, endedAtMs?: number, outputJson?: string): void {
    const completed =
      completion && endedAtMs !== undefined && outputJson !== undefined && outputJson.length <= ANNOUNCED_JSON_MAX_CHARS
        ? { ...completion, endedAtMs, outputJson }
        : undefined;
    this.ended.add({ runId, eventId, completed });
  }
}
