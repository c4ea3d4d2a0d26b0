import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { isUuid, publishOutboxEvents, type Bus, type JournalStore, type Logger } from "@stepwise/core";
import {
  CancelRunResponseSchema,
  MAX_CANCEL_REASON_LENGTH,
  type CancelRunRequest,
  type CancelRunResponse,
} from "@stepwise/proto";
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
  if (req.reason.length > MAX_CANCEL_REASON_LENGTH) {
    throw new ConnectError(`reason: at most ${MAX_CANCEL_REASON_LENGTH} characters`, Code.InvalidArgument);
  }
  if (req.reason.includes("\u0000")) throw new ConnectError("reason: must not contain a NUL character", Code.InvalidArgument);
  const notFound = () => new ConnectError(`run ${JSON.stringify(req.runId)} not found`, Code.NotFound);
  if (!isUuid(req.runId)) throw notFound();
  const reason = req.reason || "cancelled";
  const outcome = await deps.store.cancelRun(req.runId, reason);
  if (outcome.kind === "unknown") throw notFound();
  if (outcome.kind === "ended") {
    throw new ConnectError(`run ${req.runId} already ended ${outcome.status}`, Code.FailedPrecondition);
  }
  if (outcome.was === "RUNNING" && outcome.executorId) {
    deps.bus.announceRunsCancelled([{ runId: req.runId, executorId: outcome.executorId, lease: outcome.lease, reason }]);
  }
  deps.bus.announceRunsEnded([{ runId: req.runId, eventId: outcome.eventId }]);
  if (outcome.event) {
    await publishOutboxEvents(deps.store, deps.bus, [outcome.event]).catch((err: unknown) => {
      deps.log?.warn({ err, run: req.runId }, "publishing stepwise/run.cancelled failed; the reconciler publishes it");
    });
  }
  const run = await deps.store.getRun(req.runId);
  if (!run) throw notFound();
  return create(CancelRunResponseSchema, { run: toProtoRun(run) });
}
