import { create, fromJson, type JsonObject, type JsonValue } from "@bufbuild/protobuf";
import { timestampFromDate, ValueSchema } from "@bufbuild/protobuf/wkt";
import type { AwaitView, RunView, StepView } from "@stepwise/core";
import {
  AwaitKind,
  errorToDetail,
  EventSchema,
  RunAwaitSchema,
  RunSchema,
  runStatusToProto,
  StepAttemptSchema,
  StepKind,
  StepSchema,
  type Run,
} from "@stepwise/proto";

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
    invokedByRunId: run.invokedBy?.runId ?? "",
    invokedByStepKey: run.invokedBy?.stepKey ?? "",
    awaits: (run.awaits ?? []).map((a) =>
      create(RunAwaitSchema, {
        stepKey: a.key,
        stepId: a.id,
        kind: AWAIT_KINDS[a.kind],
        ...(a.dueAt ? { dueAt: timestampFromDate(a.dueAt) } : {}),
        eventName: a.eventName ?? "",
        condition: a.condition ?? "",
        ...(a.since ? { since: timestampFromDate(a.since) } : {}),
        invokedRunId: a.invokedRunId ?? "",
      }),
    ),
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
        kind: STEP_KINDS[s.kind ?? "run"],
        invokedRunId: s.invokedRunId ?? "",
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

const STEP_KINDS: Record<NonNullable<StepView["kind"]> | "run", StepKind> = {
  run: StepKind.RUN,
  sleep: StepKind.SLEEP,
  wait: StepKind.WAIT_FOR_EVENT,
  invoke: StepKind.INVOKE,
};

const AWAIT_KINDS: Record<AwaitView["kind"], AwaitKind> = {
  sleep: AwaitKind.SLEEP,
  wait: AwaitKind.WAIT_FOR_EVENT,
  invoke: AwaitKind.INVOKE,
  retry: AwaitKind.RETRY,
};
