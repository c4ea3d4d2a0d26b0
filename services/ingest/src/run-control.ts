import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { type Timestamp } from "@bufbuild/protobuf/wkt";
import {
  quote,
  announceCancelled,
  cancelOnEarlierEvents,
  compileCondition,
  conditionEvent,
  type Condition,
  InvalidConditionError,
  isUuid,
  publishQueuedRuns,
  type PublishedRunRef,
  type RunView,
  type Bus,
  type JournalStore,
  type Logger,
  type RunSelection,
  type RunStatus,
} from "@stepwise/core";
import {
  CancelRunResponseSchema,
  CancelRunsResponseSchema,
  ReplayRunResponseSchema,
  RerunRunResponseSchema,
  RerunRunsResponseSchema,
  type RerunRunsRequest,
  type RerunRunsResponse,
  type RunStatus as RunStatusProto,
  type ReplayRunRequest,
  type ReplayRunResponse,
  type RerunRunRequest,
  type RerunRunResponse,
  ID_PATTERN,
  MAX_CANCEL_REASON_LENGTH,
  MAX_STEP_KEY_LENGTH,
  runStatusFromProto,
  type CancelRunRequest,
  type CancelRunResponse,
  type CancelRunsRequest,
  type CancelRunsResponse,
} from "@stepwise/proto";
import { requestTime } from "./request-checks.js";
import { toProtoRun } from "./run-proto.js";

/** What run control needs of ingest. */
export interface RunControlDeps {
  store: JournalStore;
  bus: Bus;
  log?: Logger | undefined;
}

/**
 * RunService.CancelRun. The journal decides in one statement (the run ends
 * CANCELLED unless it ended, and its "stepwise/run.cancelled" event goes in
 * the event outbox); then the executor that held a RUNNING run is told to
 * stop it, waiters learn that it ended, and the event is published and
 * taken out of the outbox. A crash after the statement leaves the event to
 * the scheduler's reconciler, and the run stopped by the journal alone.
 */
export async function cancelRun(req: CancelRunRequest, deps: RunControlDeps): Promise<CancelRunResponse> {
  const reason = checkReason(req.reason);
  const notFound = () => new ConnectError(`run ${quote(req.runId)} not found`, Code.NotFound);
  if (!isUuid(req.runId)) throw notFound();
  const outcome = await deps.store.cancelRun(req.runId, reason);
  if (outcome.kind === "unknown") throw notFound();
  if (outcome.kind === "ended") {
    throw new ConnectError(`run ${req.runId} already ended ${outcome.status}`, Code.FailedPrecondition);
  }
  await announceCancelled(deps, [{ runId: req.runId, outcome }]);
  const run = await deps.store.getRun(req.runId);
  if (!run) throw notFound();
  return create(CancelRunResponseSchema, { run: toProtoRun(run) });
}

/** RunService.RerunRun: a new run of the function with the same event, from its first step. */
export async function rerunRun(req: RerunRunRequest, deps: RunControlDeps): Promise<RerunRunResponse> {
  return create(RerunRunResponseSchema, { run: toProtoRun(await derive(req.runId, undefined, deps)) });
}

/** RunService.ReplayRun: a new run whose journal holds the origin's steps before from_step. */
export async function replayRun(req: ReplayRunRequest, deps: RunControlDeps): Promise<ReplayRunResponse> {
  if (req.fromStep.length === 0 || req.fromStep.length > MAX_STEP_KEY_LENGTH) {
    throw new ConnectError(`from_step: a step key of 1-${MAX_STEP_KEY_LENGTH} characters`, Code.InvalidArgument);
  }
  return create(ReplayRunResponseSchema, { run: toProtoRun(await derive(req.runId, req.fromStep, deps)) });
}

/** When the reconciler publishes a new run's work if the publish here was lost. */
const DERIVED_PUBLISH_DEADLINE_MS = 60_000;

/** Creates a rerun or a replay, publishes its work and reads it back. */
async function derive(runId: string, fromStep: string | undefined, deps: RunControlDeps): Promise<RunView> {
  const notFound = () => new ConnectError(`run ${quote(runId)} not found`, Code.NotFound);
  if (!isUuid(runId)) throw notFound();
  const outcome = await deps.store.deriveRun(runId, fromStep, DERIVED_PUBLISH_DEADLINE_MS);
  if (outcome.kind === "unknown") throw notFound();
  if (outcome.kind === "not-ended") {
    throw new ConnectError(`run ${runId} is ${outcome.status}: only a run that ended can be replayed`, Code.FailedPrecondition);
  }
  if (outcome.kind === "no-step") {
    throw new ConnectError(`run ${runId} has no step ${JSON.stringify(fromStep)} journaled`, Code.FailedPrecondition);
  }
  await publishNewRuns(deps, [outcome.run]);
  await cancelOnEarlierEvents(deps, [outcome.run.runId]);
  const run = await deps.store.getRun(outcome.run.runId);
  if (!run) throw notFound();
  return run;
}

/** Publishes the work of runs a rerun or replay created; a failure is the reconciler's to mend. */
async function publishNewRuns(deps: RunControlDeps, runs: readonly PublishedRunRef[]): Promise<void> {
  await publishQueuedRuns(deps.bus, deps.store, runs).catch((err: unknown) => {
    deps.log?.warn({ err, runs: runs.length }, "publishing new runs' work failed; the reconciler publishes it");
  });
}

/** Runs a bulk call reads, tests and changes per statement. */
const PAGE = 1_000;

/**
 * RunService.CancelRuns: pages through the function's runs that the filter
 * selects, in id order, tests the condition on each one's event, and
 * cancels a page's matches in one statement, as CancelRun does each.
 */
export async function cancelRuns(req: CancelRunsRequest, deps: RunControlDeps): Promise<CancelRunsResponse> {
  const reason = checkReason(req.reason);
  const selection = readSelection(req, ["QUEUED", "RUNNING", "WAITING"], ["QUEUED", "RUNNING", "WAITING"]);
  let cancelled = 0;
  await forEachPage(deps, selection, async (ids) => {
    const outcomes = await deps.store.cancelRuns(ids, reason);
    cancelled += await announceCancelled(deps, outcomes.map((outcome, i) => ({ runId: ids[i]!, outcome })));
  });
  return create(CancelRunsResponseSchema, { cancelled });
}

/**
 * RunService.RerunRuns: as RerunRun or ReplayRun does each, for the ended
 * runs of one function that the filter selects, a page per statement.
 */
export async function rerunRuns(req: RerunRunsRequest, deps: RunControlDeps): Promise<RerunRunsResponse> {
  if (req.fromStep.length > MAX_STEP_KEY_LENGTH) {
    throw new ConnectError(`from_step: at most ${MAX_STEP_KEY_LENGTH} characters`, Code.InvalidArgument);
  }
  const selection = readSelection(req, ["COMPLETED", "FAILED", "CANCELLED"], ["FAILED"]);
  let started = 0;
  let skipped = 0;
  await forEachPage(deps, selection, async (ids) => {
    const outcomes = await deps.store.deriveRuns(ids, req.fromStep || undefined, DERIVED_PUBLISH_DEADLINE_MS);
    const runs = outcomes.flatMap((o) => (o.kind === "created" ? [o.run] : []));
    skipped += outcomes.filter((o) => o.kind === "no-step").length;
    started += runs.length;
    await publishNewRuns(deps, runs);
    await cancelOnEarlierEvents(deps, runs.map((r) => r.runId));
  });
  return create(RerunRunsResponseSchema, { started, skipped });
}

/** The runs a bulk call selects, as the request says, and the condition on their events. */
interface Selection {
  filter: RunSelection;
  condition: Condition | undefined;
}

/** Reads a bulk call's filter; INVALID_ARGUMENT for what it cannot use. */
function readSelection(
  req: { appId: string; functionId: string; statuses: RunStatusProto[]; createdAfter?: Timestamp | undefined; createdBefore?: Timestamp | undefined; condition: string },
  allowed: readonly RunStatus[],
  byDefault: readonly RunStatus[],
): Selection {
  if (!ID_PATTERN.test(req.appId)) throw new ConnectError("app_id: required, an app id", Code.InvalidArgument);
  if (!ID_PATTERN.test(req.functionId)) throw new ConnectError("function_id: required, a function id", Code.InvalidArgument);
  const statuses = new Set<RunStatus>();
  for (const s of req.statuses) {
    const name = runStatusFromProto(s);
    if (name === undefined || !allowed.includes(name)) {
      throw new ConnectError(`statuses: each must be ${allowed.join(", ")}`, Code.InvalidArgument);
    }
    statuses.add(name);
  }
  const createdAfter = requestTime(req.createdAfter, "created_after");
  const createdBefore = requestTime(req.createdBefore, "created_before");
  if (createdAfter && createdBefore && createdAfter >= createdBefore) {
    throw new ConnectError("created_before: must be after created_after", Code.InvalidArgument);
  }
  let condition: Condition | undefined;
  if (req.condition !== "") {
    try {
      condition = compileCondition(req.condition, ["event"]);
    } catch (err) {
      if (err instanceof InvalidConditionError) throw new ConnectError(`condition: ${err.message}`, Code.InvalidArgument);
      throw err;
    }
  }
  const filter = { appId: req.appId, functionId: req.functionId, statuses: statuses.size > 0 ? [...statuses] : [...byDefault], createdAfter, createdBefore };
  return { filter, condition };
}

/** Pages through a selection in id order, handing each page's runs that meet the condition to `fn`. */
async function forEachPage(deps: RunControlDeps, { filter, condition }: Selection, fn: (ids: string[]) => Promise<void>): Promise<void> {
  let after: string | undefined;
  for (;;) {
    const page = await deps.store.selectRuns(filter, after, PAGE);
    if (page.length === 0) return;
    after = page[page.length - 1]!.runId;
    const ids = page.filter((c) => !condition || testCondition(condition, c.event, deps.log)).map((c) => c.runId);
    if (ids.length > 0) await fn(ids);
    if (page.length < PAGE) return;
  }
}

/** A condition on a run's event; an event the condition cannot evaluate does not match. */
function testCondition(condition: Condition, event: { id: string; name: string; dataJson: string; tsMs: number }, log?: Logger): boolean {
  try {
    return condition.test({ event: conditionEvent(event) });
  } catch (err) {
    log?.debug({ err, event: event.id }, "a cancel condition could not be evaluated; the run is left alone");
    return false;
  }
}

function checkReason(reason: string): string {
  if (reason.length > MAX_CANCEL_REASON_LENGTH) {
    throw new ConnectError(`reason: at most ${MAX_CANCEL_REASON_LENGTH} characters`, Code.InvalidArgument);
  }
  if (reason.includes("\u0000")) throw new ConnectError("reason: must not contain a NUL character", Code.InvalidArgument);
  return reason || "cancelled";
}
