import type { ConnectRouter } from "@connectrpc/connect";
import type { Bus, JournalStore, Logger } from "@stepwise/core";
import { IngestService, RunService } from "@stepwise/proto";
import { createIngestService } from "./ingest-service.js";
import { createRunService } from "./run-service.js";
import { RunWaiters } from "./run-waiters.js";

export { EVENT_LIMITS, toEventRecords } from "./event-validation.js";
export { createIngestService } from "./ingest-service.js";
export { createRunService } from "./run-service.js";
export { RunWaiters } from "./run-waiters.js";
export { MAX_WATCHED_EVENTS } from "./run-watch.js";
// The contract's limit, which WaitForRuns enforces; exported here as before.
export { MAX_WAIT_MS } from "@stepwise/proto";

/** Registers the ingest service's RPCs (IngestService and RunService) on a router. */
export function ingestRoutes(deps: { bus: Bus; store: JournalStore; log: Logger }) {
  return (router: ConnectRouter) => {
    router.service(IngestService, createIngestService(deps.bus, deps.log));
    router.service(RunService, createRunService(deps.store, new RunWaiters(deps.bus, deps.store, deps.log), deps.log));
  };
}
