import type { Migration } from "./migrations.js";

// Migration 12: an event sent with an event key limited to one app reaches
// only that app's functions and waits (run-creation.ts, wait-store.ts).

export const V12: Migration = {
  version: 12,
  name: "event apps",
  sql: `
-- The one app an event reaches; NULL (every event before this migration, and
-- every event sent with a key of no app) reaches every app.
ALTER TABLE events ADD COLUMN app_id text;
`,
};
