import type { Migration } from "./migrations.js";

// Migration 10: the trace a run belongs to (runtime/tracing.ts).

export const V10: Migration = {
  version: 10,
  name: "run traces",
  sql: `
-- The W3C traceparent of the span a run's executions continue: the
-- scheduler's span of its event (null: the run belongs to no trace).
ALTER TABLE runs ADD COLUMN trace_parent text;
`,
};
