import type { ConnectRouter } from "@connectrpc/connect";
import type { Bus, JournalStore, Logger, ServiceMetrics } from "@stepwise/core";
import { IngestService, RunService } from "@stepwise/proto";
import { createIngestService } from "./ingest-service.js";
import { createRunService } from "./run-service.js";
import { RunWaiters } from "./run-waiters.js";

/**
 * Registers the ingest service's RPCs (IngestService and RunService) on a
 * router: what a process serving ingest passes to its Connect server.
 * `metrics` counts the events it receives.
 */
export function ingestRoutes(deps: { bus: Bus; store: JournalStore; log: Logger; metrics?: ServiceMetrics | undefined }) {
  return (router: ConnectRouter) => {
    router.service(IngestService, createIngestService(deps.bus, deps.log, deps.metrics));
    router.service(RunService, createRunService(deps.store, new RunWaiters(deps.bus, deps.store, deps.log), deps.bus, deps.log));
  };
}
