import { create, fromJson, type JsonObject, type JsonValue } from "@bufbuild/protobuf";
import { timestampFromDate, ValueSchema } from "@bufbuild/protobuf/wkt";
import type { RunView } from "@stepwise/core";
import { errorToDetail, EventSchema, RunSchema, runStatusToProto, StepAttemptSchema, StepSchema, type Run } from "@stepwise/proto";

// How RunService shows runs: the journal's run views as protobuf messages.

/** A run as RunService shows it. */
export function toProtoRun(run: RunView): Run {
  return create(RunSchema, {
    id: run.id,
    appId: run.appId,
    functionId: run.functionId,
    status: runStatusToProto(run.status),
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
    ...(run.error ? { error: errorToDetail(run.error) } : {}),
    attempts: run.lease,
    originRunId: run.originRunId ?? "",
    originStepKey: run.originStepKey ?? "",
    derivedRunIds: run.derivedRunIds,
    steps: run.steps.map((s) =>
      create(StepSchema, {
        key: s.key,
        id: s.id,
        attempt: s.attempt,
        ...(s.startedAt ? { startedAt: timestampFromDate(s.startedAt) } : {}),
        ...(s.endedAt ? { endedAt: timestampFromDate(s.endedAt) } : {}),
        ...(s.hasOutput ? { output: fromJson(ValueSchema, s.output as JsonValue) } : {}),
        ...(s.error ? { error: errorToDetail(s.error) } : {}),
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
        error: errorToDetail(a.error),
        retryAt: timestampFromDate(a.retryAt),
      }),
    ),
  });
}
