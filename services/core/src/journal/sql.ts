import pg from "pg";

/** A row of a query result, keyed by column name. */
export type Row = Record<string, unknown>;

/**
 * Sql is the narrow database surface the journal store needs. Postgres (pg)
 * and the embedded PGlite both implement it, so the store runs the same SQL
 * on either.
 */
export interface Sql {
  /** Runs one statement with positional parameters ($1, $2, ...). */
  query<T extends Row = Row>(text: string, params?: unknown[]): Promise<T[]>;
  /** Runs fn in a transaction on one connection; rolls back if it throws. */
  transaction<T>(fn: (tx: SqlTx) => Promise<T>): Promise<T>;
  /**
   * Calls onNotify for each NOTIFY on a channel, and once more after a lost
   * listening connection is back (a notification may have been missed).
   * Resolves once listening; the returned function stops.
   */
  listen(channel: string, onNotify: () => void): Promise<() => Promise<void>>;
  /** Releases every connection. */
  close(): Promise<void>;
}

/** The part of Sql usable inside a transaction. */
export interface SqlTx {
  query<T extends Row = Row>(text: string, params?: unknown[]): Promise<T[]>;
  /** Runs a script of several statements without parameters. */
  exec(script: string): Promise<void>;
}

/** Options of the Postgres pool. */
export interface PgSqlOptions {
  /** Postgres connection string. */
  url: string;
  /** Maximum connections in the pool. */
  max?: number;
  /** Schema to put first on the search_path; created when missing. */
  schema?: string;
  /** application_name reported to Postgres. */
  applicationName?: string;
}

// Keep jsonb and timestamps as the driver hands them over: jsonb is parsed
// by pg into JS values, timestamptz into Date.

/** Creates a Sql backed by a pg connection pool. */
export function createPgSql(options: PgSqlOptions): Sql {
  const pool = new pg.Pool({
    connectionString: options.url,
    max: options.max ?? 10,
    application_name: options.applicationName ?? "stepwise",
    options: [
      // JIT compiles a plan whose estimated cost passes jit_above_cost: a
      // generic plan of a hot statement joining a journal of a million runs
      // (the event matching lookup) cost 2 s of compilation at every
      // execution, and W1 fell from about 500 to 13 runs/s. The engine's
      // statements are short and many; JIT never pays for them.
      "-c jit=off",
      ...(options.schema ? [`-c search_path=${quoteIdent(options.schema)},public`] : []),
    ].join(" "),
  });
  // A connection dropped by the server surfaces here; pg replaces it on the
  // next query, so an idle error must not crash the process.
  pool.on("error", () => {});
  // And one that ends while a statement runs on it: pg-pool listens to a
  // checked-out connection's errors only once, and a server going away can
  // raise two. Each connection keeps a listener of its own for its life;
  // the statement in progress fails on its own.
  pool.on("connect", (client) => client.on("error", () => {}));
  // Every parameterised statement becomes a named prepared statement, so
  // Postgres parses and plans each hot query once per connection.
  const names = new Map<string, string>();
  const named = (text: string, params: unknown[] | undefined) => {
    if (!params || params.length === 0) return { text };
    let name = names.get(text);
    if (!name) names.set(text, (name = `sw${names.size}`));
    return { name, text, values: params };
  };
  return {
    async query<T extends Row>(text: string, params?: unknown[]) {
      const res = await pool.query<T>(named(text, params));
      return res.rows;
    },
    async transaction<T>(fn: (tx: SqlTx) => Promise<T>) {
      const client = await pool.connect();
      // pg-pool listens for a connection's errors only while it is idle: one
      // checked out here needs a listener of its own, or the server ending
      // it (Postgres restarting) is an unhandled 'error' that ends the
      // process. The statement in progress fails; the connection is dropped.
      let broken: Error | undefined;
      const onError = (err: Error) => (broken = err);
      client.on("error", onError);
      try {
        await client.query("BEGIN");
        const result = await fn({
          async query<R extends Row>(text: string, params?: unknown[]) {
            const res = await client.query<R>(named(text, params));
            return res.rows;
          },
          async exec(script: string) {
            await client.query(script);
          },
        });
        await client.query("COMMIT");
        return result;
      } catch (err) {
        await client.query("ROLLBACK").catch(() => {});
        throw err;
      } finally {
        client.removeListener("error", onError);
        client.release(broken);
      }
    },
    async listen(channel: string, onNotify: () => void) {
      let stopped = false;
      let client: pg.Client | undefined;
      let reconnecting = false;
      const connect = async (): Promise<void> => {
        const c = new pg.Client({
          connectionString: options.url,
          application_name: `${options.applicationName ?? "stepwise"}-listen`,
        });
        c.on("notification", () => onNotify());
        c.on("error", () => {});
        try {
          await c.connect();
          await c.query(`LISTEN ${quoteIdent(channel)}`);
        } catch (err) {
          await c.end().catch(() => {});
          throw err;
        }
        // Only a connection that was listening starts a reconnect when it ends.
        c.on("end", () => {
          if (stopped || client !== c) return;
          client = undefined;
          void reconnect();
        });
        client = c;
      };
      // One reconnect loop at a time, however many ends and failures occur.
      const reconnect = async (): Promise<void> => {
        if (reconnecting) return;
        reconnecting = true;
        try {
          while (!stopped && !client) {
            await new Promise((r) => setTimeout(r, 1_000));
            if (stopped) return;
            try {
              await connect();
              onNotify();
            } catch {
              // Still down: try again.
            }
          }
        } finally {
          reconnecting = false;
        }
      };
      try {
        await connect();
      } catch {
        // Postgres is down: keep trying in the background; callers poll meanwhile.
        void reconnect();
      }
      return async () => {
        stopped = true;
        await client?.end().catch(() => {});
      };
    },
    async close() {
      await pool.end();
    },
  };
}

/**
 * A Sql that reports the round trip of every statement it runs, in
 * seconds, waiting for a pooled connection included: what the journal's
 * statement latency metric observes, for Postgres and PGlite alike.
 * Statements that fail are reported too; a transaction's BEGIN and
 * COMMIT are not.
 */
export function timedSql(sql: Sql, observe: (seconds: number) => void): Sql {
  // One async function per statement, no closure: this is on every statement's path.
  const timedTx = (tx: SqlTx): SqlTx => ({
    async query<R extends Row = Row>(text: string, params?: unknown[]) {
      const start = performance.now();
      try {
        return await tx.query<R>(text, params);
      } finally {
        observe((performance.now() - start) / 1000);
      }
    },
    async exec(script: string) {
      const start = performance.now();
      try {
        await tx.exec(script);
      } finally {
        observe((performance.now() - start) / 1000);
      }
    },
  });
  return {
    async query<T extends Row = Row>(text: string, params?: unknown[]) {
      const start = performance.now();
      try {
        return await sql.query<T>(text, params);
      } finally {
        observe((performance.now() - start) / 1000);
      }
    },
    transaction: (fn) => sql.transaction((tx) => fn(timedTx(tx))),
    listen: (channel, onNotify) => sql.listen(channel, onNotify),
    close: () => sql.close(),
  };
}

/** Quotes an SQL identifier. */
export function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}
