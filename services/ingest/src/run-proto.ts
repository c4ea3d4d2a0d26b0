import { create, fromJson, type JsonObject, type JsonValue } from "@bufbuild/protobuf";
import { timestampFromDate, ValueSchema } from "@bufbuild/protobuf/wkt";
import { errorToProto, type RunStatus, type RunView } from "@stepwise/core";
import { EventSchema, RunSchema, RunStatus as ProtoRunStatus, StepAttemptSchema, StepSchema, type Run } from "@stepwise/proto";

// How RunService shows runs: the journal's run views as protobuf messages.

/** Each journal status as RunService shows it. */
export const STATUS_TO_PROTO: Record<RunStatus, ProtoRunStatus> = {
  QUEUED: ProtoRunStatus.QUEUED,
  RUNNING: ProtoRunStatus.RUNNING,
  WAITING: ProtoRunStatus.WAITING,
  COMPLETED: ProtoRunStatus.COMPLETED,
  FAILED: ProtoRunStatus.FAILED,
  CANCELLED: ProtoRunStatus.CANCELLED,
};

/** The statuses a run ends in. */
export const ENDED_STATUSES: ReadonlySet<RunStatus> = new Set<RunStatus>(["COMPLETED", "FAILED", "CANCELLED"]);

/** A run as RunService shows it. */
export function toProtoRun(run: RunView): Run {
  return create(RunSchema, {
    id: run.id,
    appId: run.appId,
    functionId: run.functionId,
    status: STATUS_TO_PROTO[run.status],
    event: create(EventSchema, {
      id: run.event.id,
      name: run.event.name,
      data: run.event.data as JsonObject,
      ts: timestampFromDate(run.event.ts),
    }),
    createdAt: timestampFromDate(run.createdAt),
    ...(run.startedAt ? { startedAt: timestampFromDate(run.startedAt) } : {}),
    ...(run.endedAt ? { endedAt: timestampFromDate(run.endedAt) } : {}),
    ...(run.hasOutput ? { output: fromJson(ValueSchema, run.output as JsonValue) } : {}),
    ...(run.error ? { error: errorToProto(run.error) } : {}),
    attempts: run.lease,
    steps: run.steps.map((s) =>
      create(StepSchema, {
        key: s.key,
        id: s.id,
        attempt: s.attempt,
        ...(s.startedAt ? { startedAt: timestampFromDate(s.startedAt) } : {}),
        ...(s.endedAt ? { endedAt: timestampFromDate(s.endedAt) } : {}),
        ...(s.hasOutput ? { output: fromJson(ValueSchema, s.output as JsonValue) } : {}),
        ...(s.error ? { error: errorToProto(s.error) } : {}),
        journaledAt: timestampFromDate(s.journaledAt),
      }),
    ),
    failedAttempts: run.failedAttempts.map((a) =>
      create(StepAttemptSchema, {
        stepKey: a.key,
        stepId: a.id,
        attempt: a.attempt,
        ...(a.startedAt ? { startedAt: timestampFromDate(a.startedAt) } : {}),
        ...(a.endedAt ? { endedAt: timestampFromDate(a.endedAt) } : {}),
        error: errorToProto(a.error),
        retryAt: timestampFromDate(a.retryAt),
      }),
    ),
  });
}
