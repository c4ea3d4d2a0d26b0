import { randomBytes } from "node:crypto";
import pg from "pg";
import { createPgliteSql } from "../journal/pglite-sql.js";
import { createPgSql, quoteIdent, type Sql } from "../journal/sql.js";

// For the conformance suites that run the same cases on Postgres and on
// PGlite (the store and scheduler tests); not part of the engine's API.

/** The Postgres the suites use: their own schema in database `test`. */
export const TEST_DATABASE_URL = process.env["TEST_DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/test";

/** A fresh, empty database (or schema) for one suite. */
export interface TestDatabase {
  sql: Sql;
  /** What migrate needs to target this database. */
  migrateOptions: { schema?: string };
  drop(): Promise<void>;
}

/** One of the two journal backends a conformance suite runs on. */
export interface TestBackend {
  name: "Postgres" | "PGlite";
  open(): Promise<TestDatabase>;
  /** Several connections at once: concurrent statements really race. */
  pooled: boolean;
}

/** A schema of its own on the test Postgres, dropped by drop(). */
export async function openPgSchema(prefix: string): Promise<TestDatabase> {
  const schema = `${prefix}_${randomBytes(6).toString("hex")}`;
  const sql = createPgSql({ url: TEST_DATABASE_URL, schema, max: 8, applicationName: `${prefix}-test` });
  return {
    sql,
    migrateOptions: { schema },
    async drop() {
      await sql.close();
      const admin = new pg.Client({ connectionString: TEST_DATABASE_URL });
      await admin.connect();
      try {
        await admin.query(`DROP SCHEMA IF EXISTS ${quoteIdent(schema)} CASCADE`);
      } finally {
        await admin.end();
      }
    },
  };
}

/** A PGlite in memory. */
export async function openPglite(): Promise<TestDatabase> {
  const sql = await createPgliteSql();
  return { sql, migrateOptions: {}, drop: () => sql.close() };
}

/** Both backends; Postgres schemas named after prefix. */
export function testBackends(prefix: string): TestBackend[] {
  return [
    { name: "Postgres", open: () => openPgSchema(prefix), pooled: true },
    { name: "PGlite", open: openPglite, pooled: false },
  ];
}

let counter = 0;
/** A name no other test (or earlier run against the same database) uses. */
export function uniq(base: string): string {
  return `${base}-${++counter}-${randomBytes(3).toString("hex")}`;
}
