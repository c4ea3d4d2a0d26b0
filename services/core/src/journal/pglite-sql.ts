import { PGlite } from "@electric-sql/pglite";
import type { Row, Sql, SqlTx } from "./sql.js";

/**
 * Creates a Sql backed by PGlite, Postgres compiled to WebAssembly and run
 * in this process. dataDir persists the database; omit it for memory only.
 * PGlite has one connection, so statements are serialised; transactions hold
 * the connection until they end.
 */
export async function createPgliteSql(dataDir?: string): Promise<Sql> {
  const db = dataDir ? new PGlite(dataDir) : new PGlite();
  await db.waitReady;
  return {
    async query<T extends Row>(text: string, params?: unknown[]) {
      const res = await db.query<T>(text, params ?? []);
      return res.rows;
    },
    async transaction<T>(fn: (tx: SqlTx) => Promise<T>) {
      return db.transaction(async (tx) =>
        fn({
          async query<R extends Row>(text: string, params?: unknown[]) {
            const res = await tx.query<R>(text, params ?? []);
            return res.rows;
          },
          async exec(script: string) {
            await tx.exec(script);
          },
        }),
      );
    },
    async listen(channel: string, onNotify: () => void) {
      const unsubscribe = await db.listen(channel, () => onNotify());
      return () => unsubscribe();
    },
    async close() {
      await db.close();
    },
  };
}
