import { create, fromJson } from "@bufbuild/protobuf";
import { timestampFromDate, ValueSchema } from "@bufbuild/protobuf/wkt";
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { errorToProto, isUuid, type JournalStore, type RunStatus, type RunView } from "@stepwise/core";
import {
  EventSchema,
  GetRunResponseSchema,
  ListRunsResponseSchema,
  RunSchema,
  RunService,
  RunStatus as ProtoRunStatus,
  StepAttemptSchema,
  StepSchema,
  WaitForRunsResponseSchema,
  type Run,
} from "@stepwise/proto";
import type { RunWaiters } from "./run-waiters.js";

const STATUS_TO_PROTO: Record<RunStatus, ProtoRunStatus> = {
  QUEUED: ProtoRunStatus.QUEUED,
  RUNNING: ProtoRunStatus.RUNNING,
  WAITING: ProtoRunStatus.WAITING,
  COMPLETED: ProtoRunStatus.COMPLETED,
  FAILED: ProtoRunStatus.FAILED,
  CANCELLED: ProtoRunStatus.CANCELLED,
};

const PROTO_TO_STATUS = new Map<ProtoRunStatus, RunStatus>(
  Object.entries(STATUS_TO_PROTO).map(([k, v]) => [v, k as RunStatus]),
);

/** Longest WaitForRuns, in milliseconds. */
export const MAX_WAIT_MS = 300_000;
const DEFAULT_WAIT_MS = 30_000;
const ENDED = new Set<RunStatus>(["COMPLETED", "FAILED", "CANCELLED"]);

/**
 * RunService: reads runs and their journals from Postgres, and waits for
 * the runs of an event to end, woken by the executors' announcements.
 */
export function createRunService(store: JournalStore, waiters: RunWaiters): ServiceImpl<typeof RunService> {
  return {
    async waitForRuns(req, ctx) {
      if (req.eventId.length === 0 || req.eventId.length > 256) {
        throw new ConnectError("event_id: must be an event id of 1-256 characters", Code.InvalidArgument);
      }
      if (req.timeoutMs > MAX_WAIT_MS) throw new ConnectError(`timeout_ms: at most ${MAX_WAIT_MS}`, Code.InvalidArgument);
      const deadline = Date.now() + (req.timeoutMs || DEFAULT_WAIT_MS);
      await waiters.ready();
      for (;;) {
        // Registered before the read, so an end announced during it wakes this waiter.
        const next = waiters.next(req.eventId, deadline - Date.now(), ctx.signal);
        const runs = await store.listRuns({ eventId: req.eventId, limit: 1000 });
        const done = runs.length > 0 && runs.every((r) => ENDED.has(r.status));
        if (done || Date.now() >= deadline || ctx.signal.aborted) {
          next.cancel();
          return create(WaitForRunsResponseSchema, { runs: runs.map(toProtoRun), done });
        }
        await next.woken;
      }
    },
    async getRun(req) {
      const run = isUuid(req.runId) ? await store.getRun(req.runId) : null;
      if (!run) throw new ConnectError(`run ${JSON.stringify(req.runId)} not found`, Code.NotFound);
      return create(GetRunResponseSchema, { run: toProtoRun(run) });
    },
    async listRuns(req) {
      const limit = req.pageSize === 0 ? 100 : req.pageSize;
      if (limit > 1000) throw new ConnectError("page_size: at most 1000", Code.InvalidArgument);
      if (req.status !== ProtoRunStatus.UNSPECIFIED && !PROTO_TO_STATUS.has(req.status)) {
        throw new ConnectError("status: unknown value", Code.InvalidArgument);
      }
      const runs = await store.listRuns({
        functionId: req.functionId || undefined,
        status: PROTO_TO_STATUS.get(req.status),
        eventId: req.eventId || undefined,
        limit: limit + 1,
        before: req.pageToken ? decodePageToken(req.pageToken) : undefined,
      });
      const page = runs.slice(0, limit);
      const last = page[page.length - 1];
      return create(ListRunsResponseSchema, {
        runs: page.map(toProtoRun),
        nextPageToken: runs.length > limit && last ? encodePageToken(last) : "",
      });
    },
  };
}

function encodePageToken(run: RunView): string {
  return Buffer.from(JSON.stringify([run.createdAt.toISOString(), run.id])).toString("base64url");
}

function decodePageToken(token: string): { createdAt: Date; id: string } {
  try {
    const [at, id] = JSON.parse(Buffer.from(token, "base64url").toString()) as [string, string];
    const createdAt = new Date(at);
    if (Number.isNaN(createdAt.getTime()) || !isUuid(id)) throw new Error("bad token");
    return { createdAt, id };
  } catch {
    throw new ConnectError("page_token: not a token this service issued", Code.InvalidArgument);
  }
}

function toProtoRun(run: RunView): Run {
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
