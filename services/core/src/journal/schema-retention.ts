import type { Migration } from "./migrations.js";

// Migration 13: what retention (retention.ts) deletes by, without scanning
// the tables it trims.

export const V13: Migration = {
  version: 13,
  name: "retention",
  sql: `
-- The ended runs, oldest end first.
CREATE INDEX runs_ended ON runs (ended_at) WHERE ended_at IS NOT NULL;
-- The runs of a window (debounce, batchEvents): a window's events go once none is left.
CREATE INDEX runs_window ON runs (window_id) WHERE window_id IS NOT NULL;
-- Whether an event is still in a window.
CREATE INDEX window_events_event ON window_events (event_id);
`,
};
