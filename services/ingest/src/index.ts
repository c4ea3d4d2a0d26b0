export { DASHBOARD_DIR, dashboardFiles } from "./dashboard-files.js";
export { EVENT_LIMITS, toEventRecords } from "./event-validation.js";
export { ingestRoutes } from "./ingest-routes.js";
export { createIngestService } from "./ingest-service.js";
export { createRunService } from "./run-service.js";
export { RunWaiters } from "./run-waiters.js";
export { MAX_WATCHED_EVENTS } from "./run-watch.js";
// The contract's limit, which WaitForRuns enforces; exported here as before.
export { MAX_WAIT_MS } from "@stepwise/proto";
