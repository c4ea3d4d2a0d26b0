import { toJson } from "@bufbuild/protobuf";
import { timestampDate, ValueSchema } from "@bufbuild/protobuf/wkt";
import { errorFromDetail, runStatusFromProto, type ErrorDetail, type Run, type RunStatusName } from "@stepwise/proto";
import type { SerializedError } from "./errors.js";

// Runs as the client shows them: plain objects, not the contract's messages.

/**
 * Where a run is in its life: "QUEUED", "RUNNING", "WAITING" (suspended:
 * sleeping, waiting for an event or for a retry), or one of the ends,
 * "COMPLETED", "FAILED", "CANCELLED" and "SKIPPED" (never started: flow
 * control kept it from starting). The same names the journal stores
 * and the contract's RunStatus values carry.
 */
export type RunStatus = RunStatusName;

/** A journaled step as GetRun returns it. */
export interface StepInfo {
  key: string;
  id: string;
  attempt: number;
  startedAt: Date | undefined;
  endedAt: Date | undefined;
  output: unknown;
  error: SerializedError | undefined;
}

/** A run as GetRun returns it. */
export interface RunInfo {
  id: string;
  appId: string;
  functionId: string;
  status: RunStatus;
  event: { id: string; name: string; data: unknown };
  createdAt: Date | undefined;
  startedAt: Date | undefined;
  endedAt: Date | undefined;
  output: unknown;
  error: SerializedError | undefined;
  /** Times the run was given to a worker. */
  attempts: number;
  steps: StepInfo[];
  /** Failed attempts that were retried, of steps and of the handler (key ""), in the order they were journaled. */
  failedAttempts: AttemptInfo[];
  /** The run this one was made from by rerunRun or replayRun. */
  originRunId: string | undefined;
  /** For a replay, the key of the first step it executed again. */
  originStepKey: string | undefined;
  /** The runs made from this one by rerunRun or replayRun, oldest first (getRun only). */
  derivedRunIds: string[];
}

/** A failed attempt that was retried, as GetRun returns it. */
export interface AttemptInfo {
  key: string;
  id: string;
  attempt: number;
  startedAt: Date | undefined;
  endedAt: Date | undefined;
  error: SerializedError | undefined;
  retryAt: Date | undefined;
}

/** A run of the contract as the client shows it. */
export function toRunInfo(run: Run): RunInfo {
  const err = (e: ErrorDetail | undefined) => (e ? errorFromDetail(e) : undefined);
  return {
    id: run.id,
    appId: run.appId,
    functionId: run.functionId,
    // RUN_STATUS_UNSPECIFIED, or a status newer than this SDK: shown as queued.
    status: runStatusFromProto(run.status) ?? "QUEUED",
    event: { id: run.event?.id ?? "", name: run.event?.name ?? "", data: run.event?.data },
    createdAt: run.createdAt ? timestampDate(run.createdAt) : undefined,
    startedAt: run.startedAt ? timestampDate(run.startedAt) : undefined,
    endedAt: run.endedAt ? timestampDate(run.endedAt) : undefined,
    output: run.output ? toJson(ValueSchema, run.output) : undefined,
    error: err(run.error),
    attempts: run.attempts,
    originRunId: run.originRunId || undefined,
    originStepKey: run.originStepKey || undefined,
    derivedRunIds: run.derivedRunIds,
    steps: run.steps.map((s) => ({
      key: s.key,
      id: s.id,
      attempt: s.attempt,
      startedAt: s.startedAt ? timestampDate(s.startedAt) : undefined,
      endedAt: s.endedAt ? timestampDate(s.endedAt) : undefined,
      output: s.output ? toJson(ValueSchema, s.output) : undefined,
      error: err(s.error),
    })),
    failedAttempts: run.failedAttempts.map((a) => ({
      key: a.stepKey,
      id: a.stepId,
      attempt: a.attempt,
      startedAt: a.startedAt ? timestampDate(a.startedAt) : undefined,
      endedAt: a.endedAt ? timestampDate(a.endedAt) : undefined,
      error: err(a.error),
      retryAt: a.retryAt ? timestampDate(a.retryAt) : undefined,
    })),
  };
}
