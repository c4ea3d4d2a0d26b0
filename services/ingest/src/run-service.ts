import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { isUuid, quote, type Bus, type JournalStore, type Logger, type RunView } from "@stepwise/core";
import {
  ENDED_RUN_STATUSES,
  ID_PATTERN,
  GetRunResponseSchema,
  ListRunsResponseSchema,
  MAX_EVENT_ID_LENGTH,
  MAX_WAIT_MS,
  RunService,
  RunStatus as ProtoRunStatus,
  runStatusFromProto,
  WaitForRunsResponseSchema,
} from "@stepwise/proto";
import { refuseNul, requestTime } from "./request-checks.js";
import { listEvents, listFunctions, listWorkers } from "./listings.js";
import { cancelRun, cancelRuns, replayRun, rerunRun, rerunRuns } from "./run-control.js";
import { toProtoRun } from "./run-proto.js";
import type { RunWaiters } from "./run-waiters.js";
import { watchRuns } from "./run-watch.js";

const DEFAULT_WAIT_MS = 30_000;

/**
 * RunService: reads runs and their journals from Postgres, and waits for
 * the runs of an event to end, woken by the executors' announcements.
 */
export function createRunService(store: JournalStore, waiters: RunWaiters, bus: Bus, log?: Logger): ServiceImpl<typeof RunService> {
  return refusingNul(runService(store, waiters, bus, log));
}

/** Every request (and every message of WatchRuns) refused before it reaches a query when a string holds NUL. */
function refusingNul(impl: ServiceImpl<typeof RunService>): ServiceImpl<typeof RunService> {
  const out: Record<string, unknown> = {};
  for (const [name, method] of Object.entries(RunService.method)) {
    const fn = (impl as Record<string, (req: unknown, ctx: HandlerContext) => unknown>)[name]!.bind(impl);
    out[name] =
      method.methodKind === "unary"
        ? (req: object, ctx: HandlerContext) => {
            refuseNul(method.input, req);
            return fn(req, ctx);
          }
        : (reqs: AsyncIterable<object>, ctx: HandlerContext) =>
            fn(
              (async function* () {
                for await (const req of reqs) {
                  refuseNul(method.input, req);
                  yield req;
                }
              })(),
              ctx,
            );
  }
  return out as ServiceImpl<typeof RunService>;
}

function runService(store: JournalStore, waiters: RunWaiters, bus: Bus, log?: Logger): ServiceImpl<typeof RunService> {
  return {
    cancelRun(req) {
      return cancelRun(req, { store, bus, log });
    },
    cancelRuns(req) {
      return cancelRuns(req, { store, bus, log });
    },
    listFunctions(req) {
      return listFunctions(req, store);
    },
    listEvents(req) {
      return listEvents(req, store);
    },
    listWorkers(req) {
      return listWorkers(req, store);
    },
    rerunRuns(req) {
      return rerunRuns(req, { store, bus, log });
    },
    rerunRun(req) {
      return rerunRun(req, { store, bus, log });
    },
    replayRun(req) {
      return replayRun(req, { store, bus, log });
    },
    watchRuns(requests, ctx) {
      return watchRuns(requests, ctx, { store, waiters, log });
    },
    async waitForRuns(req, ctx) {
      if (req.eventId.length === 0 || req.eventId.length > MAX_EVENT_ID_LENGTH) {
        throw new ConnectError(`event_id: must be an event id of 1-${MAX_EVENT_ID_LENGTH} characters`, Code.InvalidArgument);
      }
      if (req.timeoutMs > MAX_WAIT_MS) throw new ConnectError(`timeout_ms: at most ${MAX_WAIT_MS}`, Code.InvalidArgument);
      const deadline = Date.now() + (req.timeoutMs || DEFAULT_WAIT_MS);
      await waiters.ready();
      for (;;) {
        // Registered before the read, so an end announced during it wakes this waiter.
        const next = waiters.next(req.eventId, deadline - Date.now(), ctx.signal);
        const runs = await store.listRuns({ eventId: req.eventId, limit: 1000 });
        const done = runs.length > 0 && runs.every((r) => ENDED_RUN_STATUSES.has(r.status));
        if (done || Date.now() >= deadline || ctx.signal.aborted) {
          next.cancel();
          return create(WaitForRunsResponseSchema, { runs: runs.map(toProtoRun), done });
        }
        await next.woken;
      }
    },
    async getRun(req) {
      const run = isUuid(req.runId) ? await store.getRun(req.runId) : null;
      if (!run) throw new ConnectError(`run ${quote(req.runId)} not found`, Code.NotFound);
      return create(GetRunResponseSchema, { run: toProtoRun(run) });
    },
    async listRuns(req) {
      const limit = req.pageSize === 0 ? 100 : req.pageSize;
      if (limit > 1000) throw new ConnectError("page_size: at most 1000", Code.InvalidArgument);
      const status = runStatusFromProto(req.status);
      if (status === undefined && req.status !== ProtoRunStatus.UNSPECIFIED) {
        throw new ConnectError("status: unknown value", Code.InvalidArgument);
      }
      if (req.appId !== "" && !ID_PATTERN.test(req.appId)) throw new ConnectError("app_id: not an app id", Code.InvalidArgument);
      const createdAfter = requestTime(req.createdAfter, "created_after");
      const createdBefore = requestTime(req.createdBefore, "created_before");
      const runs = await store.listRuns({
        appId: req.appId || undefined,
        functionId: req.functionId || undefined,
        status,
        eventId: req.eventId || undefined,
        createdAfter,
        createdBefore,
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
