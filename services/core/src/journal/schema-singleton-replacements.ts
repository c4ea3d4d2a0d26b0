import type { Migration } from "./migrations.js";

// Migration 11: the cancels a singleton in mode cancel owes, kept with the
// admission that decided them (concurrency-slots.ts).

export const V11: Migration = {
  version: 11,
  name: "singleton replacements",
  sql: `
-- A run admitted under a singleton in mode cancel replaces the runs of its
-- key that had not ended: a row per replaced run, written in the statement
-- that admits the new one, deleted in the statement that cancels the old
-- one. A scheduler that dies between the two leaves the row for the next
-- slot keeper round, of any scheduler.
CREATE TABLE singleton_replacements (
  replaced_id uuid NOT NULL,
  by_run_id   uuid NOT NULL,
  PRIMARY KEY (replaced_id, by_run_id)
);
`,
};
