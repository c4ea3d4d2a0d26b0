import pg from "pg";
import { describe, expect, it } from "vitest";
import { TEST_DATABASE_URL } from "../testing/test-database.js";
import { createPgSql } from "./sql.js";

// The Postgres Sql when the server ends its connections (a restart): the
// statements in progress fail, the process goes on, and the next ones run
// on new connections.
describe("createPgSql when Postgres ends its connections", () => {
  it("fails the transactions and queries in progress without an unhandled error, and serves the next ones", async () => {
    const name = `sqltest-${process.pid}-${Date.now()}`;
    const sql = createPgSql({ url: TEST_DATABASE_URL, max: 4, applicationName: name });
    const admin = new pg.Client({ connectionString: TEST_DATABASE_URL });
    await admin.connect();
    const unhandled: unknown[] = [];
    const onUnhandled = (err: unknown) => unhandled.push(err);
    process.on("uncaughtException", onUnhandled);
    try {
      expect(await sql.query<{ one: number }>("SELECT 1 AS one")).toEqual([{ one: 1 }]);
      // A transaction and a plain query, each in a long statement when their backends are terminated.
      const outcome = (p: Promise<unknown>) => p.then(() => "completed", (err: unknown) => (err instanceof Error ? "failed" : "odd"));
      const inTx = outcome(sql.transaction(async (tx) => tx.query("SELECT pg_sleep(5)")));
      const plain = outcome(sql.query("SELECT pg_sleep(5)"));
      for (let i = 0; i < 100; i++) {
        const rows = await admin.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1 AND query LIKE '%pg_sleep%'", [name]);
        if (rows.rows[0].n >= 2) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      await admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", [name]);
      expect(await inTx).toBe("failed");
      expect(await plain).toBe("failed");
      await new Promise((r) => setTimeout(r, 200));
      expect(unhandled).toEqual([]);
      expect(await sql.transaction(async (tx) => tx.query<{ two: number }>("SELECT 2 AS two"))).toEqual([{ two: 2 }]);
      expect(await sql.query<{ one: number }>("SELECT 1 AS one")).toEqual([{ one: 1 }]);
    } finally {
      process.off("uncaughtException", onUnhandled);
      await admin.end();
      await sql.close();
    }
  });
});

describe("createPgSql's sessions", () => {
  it("run with JIT off and the schema first on the search path", async () => {
    const schema = `sqltest_jit_${process.pid}`;
    const sql = createPgSql({ url: TEST_DATABASE_URL, max: 2, schema });
    try {
      expect(await sql.query<{ jit: string }>("SELECT current_setting('jit') AS jit")).toEqual([{ jit: "off" }]);
      const [path] = await sql.query<{ p: string }>("SELECT current_setting('search_path') AS p");
      expect(path!.p).toMatch(new RegExp(`^"?${schema}"?,public$`));
    } finally {
      await sql.close();
    }
  });
});
