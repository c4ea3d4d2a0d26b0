import { create, type JsonObject } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import type { JournalStore, RunStatus } from "@stepwise/core";
import {
  EventInfoSchema,
  EventSchema,
  FunctionInfoSchema,
  ID_PATTERN,
  ListEventsResponseSchema,
  ListFunctionsResponseSchema,
  ListWorkersResponseSchema,
  MAX_EVENT_NAME_LENGTH,
  RUN_STATUSES,
  RunStatusCountSchema,
  runStatusToProto,
  WorkerInfoSchema,
  type ListEventsRequest,
  type ListEventsResponse,
  type ListFunctionsRequest,
  type ListFunctionsResponse,
  type ListWorkersRequest,
  type ListWorkersResponse,
} from "@stepwise/proto";
import { requestTime } from "./request-checks.js";
import { toProtoRun } from "./run-proto.js";

// RunService's lists of what is not a run: the registered functions (with
// their recent runs counted by status), the stored events with the runs
// each started, and the connected workers. The dashboard reads them, and
// so can curl.

const DEFAULT_EVENT_PAGE = 50;
const MAX_PAGE = 1000;

function checkAppId(appId: string): void {
  if (appId !== "" && !ID_PATTERN.test(appId)) throw new ConnectError("app_id: not an app id", Code.InvalidArgument);
}

/** ListFunctions: the registered functions, and with counts_since the counts of their runs by status. */
export async function listFunctions(req: ListFunctionsRequest, store: JournalStore): Promise<ListFunctionsResponse> {
  checkAppId(req.appId);
  const since = requestTime(req.countsSince, "counts_since");
  const [functions, counts] = await Promise.all([
    store.listFunctions(req.appId || undefined),
    since ? store.countRuns(since, req.appId || undefined) : Promise.resolve([]),
  ]);
  const byFunction = new Map<string, Map<RunStatus, number>>();
  for (const c of counts) {
    const key = `${c.appId}/${c.functionId}`;
    let m = byFunction.get(key);
    if (!m) byFunction.set(key, (m = new Map()));
    m.set(c.status, c.count);
  }
  return create(ListFunctionsResponseSchema, {
    functions: functions.map((f) => {
      const m = byFunction.get(`${f.appId}/${f.functionId}`);
      return create(FunctionInfoSchema, {
        appId: f.appId,
        functionId: f.functionId,
        name: f.name,
        config: f.config as JsonObject,
        updatedAt: timestampFromDate(f.updatedAt),
        runCounts: m
          ? RUN_STATUSES.filter((s) => m.has(s)).map((s) => create(RunStatusCountSchema, { status: runStatusToProto(s), count: m.get(s)! }))
          : [],
      });
    }),
  });
}

/** ListEvents: the stored events, newest first, each with its runs. */
export async function listEvents(req: ListEventsRequest, store: JournalStore): Promise<ListEventsResponse> {
  const limit = req.pageSize === 0 ? DEFAULT_EVENT_PAGE : req.pageSize;
  if (limit > MAX_PAGE) throw new ConnectError(`page_size: at most ${MAX_PAGE}`, Code.InvalidArgument);
  if (req.name.length > MAX_EVENT_NAME_LENGTH) {
    throw new ConnectError(`name: at most ${MAX_EVENT_NAME_LENGTH} characters`, Code.InvalidArgument);
  }
  const events = await store.listEvents({
    name: req.name || undefined,
    limit: limit + 1,
    before: req.pageToken ? decodeEventPageToken(req.pageToken) : undefined,
  });
  const page = events.slice(0, limit);
  const last = page[page.length - 1];
  return create(ListEventsResponseSchema, {
    events: page.map((e) =>
      create(EventInfoSchema, {
        event: create(EventSchema, { id: e.id, name: e.name, data: e.data as JsonObject, ts: timestampFromDate(e.ts) }),
        receivedAt: timestampFromDate(e.receivedAt),
        // Without their event: it is the one they are listed under.
        runs: e.runs.map((r) => {
          const run = toProtoRun(r);
          run.event = undefined;
          return run;
        }),
      }),
    ),
    nextPageToken: events.length > limit && last ? encodeEventPageToken(last.storedAtUs, last.id) : "",
  });
}

/** ListWorkers: the workers connected to the executors now. */
export async function listWorkers(req: ListWorkersRequest, store: JournalStore): Promise<ListWorkersResponse> {
  checkAppId(req.appId);
  const workers = await store.listWorkers(req.appId || undefined);
  return create(ListWorkersResponseSchema, {
    workers: workers.map((w) =>
      create(WorkerInfoSchema, {
        workerId: w.workerId,
        appId: w.appId,
        functionIds: [...w.functionIds],
        capacity: w.capacity,
        slotsInUse: w.slotsInUse,
        sdk: w.sdk,
        executorId: w.executorId,
        executorHost: w.executorHost,
        connectedAt: timestampFromDate(w.connectedAt),
        heartbeatAt: timestampFromDate(w.heartbeatAt),
      }),
    ),
  });
}

function encodeEventPageToken(storedAtUs: bigint, id: string): string {
  return Buffer.from(JSON.stringify([storedAtUs.toString(), id])).toString("base64url");
}

function decodeEventPageToken(token: string): { storedAtUs: bigint; id: string } {
  try {
    const [us, id] = JSON.parse(Buffer.from(token, "base64url").toString()) as [unknown, unknown];
    if (typeof us !== "string" || !/^-?\d{1,19}$/.test(us) || typeof id !== "string" || id === "") throw new Error("bad token");
    return { storedAtUs: BigInt(us), id };
  } catch {
    throw new ConnectError("page_token: not a token this service issued", Code.InvalidArgument);
  }
}
