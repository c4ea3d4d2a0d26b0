import { createHash, randomBytes, randomUUID } from "node:crypto";
import { ID_PATTERN } from "@stepwise/proto";
import { quoteIdent, type Sql } from "../journal/sql.js";

/**
 * What a key may do:
 * - `event`: IngestService (Send, SendStream);
 * - `worker`: WorkerService.Connect, for the key's one app;
 * - `read`: RunService's reads (runs, events, functions, workers), the dashboard;
 * - `admin`: what `read` and `event` may (the dashboard sends events), and run control (cancel, rerun, replay).
 */
export type KeyScope = "event" | "worker" | "read" | "admin";

export const KEY_SCOPES: readonly KeyScope[] = ["event", "worker", "read", "admin"];

/** The environment every deployment has, where a keyless (insecure) request goes. */
export const DEFAULT_ENVIRONMENT = "default";

/** An environment name: a lower-case letter, then up to 31 lower-case letters, digits or dashes. */
export const ENVIRONMENT_PATTERN = /^[a-z][a-z0-9-]{0,31}$/;


/** A key as the services know it: never the key itself, only what it allows. */
export interface ApiKey {
  id: string;
  environment: string;
  scope: KeyScope;
  /** The app a `worker` key registers as, or the one app an `event` key's events reach; null for every app. */
  app: string | null;
  name: string;
  createdAt: Date;
  revokedAt: Date | null;
}

/** The prefix of every key, so that scanners and people recognise one. */
const KEY_PREFIX = "sw_";

/** A new secret key: the prefix and 32 random bytes, base64url. */
export function generateKey(): string {
  return KEY_PREFIX + randomBytes(32).toString("base64url");
}

/** What the journal keeps of a key: its SHA-256, hex. A key is random enough that no salt or slow hash is needed. */
export function hashKey(key: string): string {
  return createHash("sha256").update(key, "utf8").digest("hex");
}

// Arbitrary but fixed, distinct from the journal's migration lock.
const CONTROL_LOCK = 7_310_524_092;

/**
 * The tables every environment shares, in the deployment's own schema
 * (DATABASE_SCHEMA): the keys, and the environments besides `default`.
 * Made if missing; they change only by adding columns with defaults.
 */
export async function migrateControl(sql: Sql, options: { schema?: string | undefined } = {}): Promise<void> {
  await sql.transaction(async (tx) => {
    await tx.query("SELECT pg_advisory_xact_lock($1)", [CONTROL_LOCK]);
    // The pool's search_path names the schema; it must exist before the tables are made in it, not in public.
    if (options.schema) await tx.exec(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(options.schema)}`);
    await tx.exec(`
CREATE TABLE IF NOT EXISTS environments (
  name       text PRIMARY KEY,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS api_keys (
  id          uuid PRIMARY KEY,
  key_hash    text NOT NULL UNIQUE,
  environment text NOT NULL,
  scope       text NOT NULL CHECK (scope IN ('event', 'worker', 'read', 'admin')),
  app         text,
  name        text NOT NULL DEFAULT '',
  created_at  timestamptz NOT NULL DEFAULT now(),
  revoked_at  timestamptz,
  -- Bumped on every change: the services reload the keys when its maximum moves.
  changed_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);`);
  });
}

/** A request to make a key. */
export interface NewKey {
  environment: string;
  scope: KeyScope;
  app?: string | undefined;
  name?: string | undefined;
}

interface KeyRow extends Record<string, unknown> {
  id: string;
  environment: string;
  scope: KeyScope;
  app: string | null;
  name: string;
  created_at: Date;
  revoked_at: Date | null;
}

function toKey(r: KeyRow): ApiKey {
  return { id: r.id, environment: r.environment, scope: r.scope, app: r.app, name: r.name, createdAt: r.created_at, revokedAt: r.revoked_at };
}

/** Why a key request is refused, in words for the person who made it. */
export function newKeyProblem(k: NewKey): string | undefined {
  if (!ENVIRONMENT_PATTERN.test(k.environment)) return `environment ${JSON.stringify(k.environment)}: a lower-case letter, then up to 31 lower-case letters, digits or dashes`;
  if (!KEY_SCOPES.includes(k.scope)) return `scope ${JSON.stringify(k.scope)}: one of ${KEY_SCOPES.join(", ")}`;
  if (k.scope === "worker" && !k.app) return "a worker key is for one app: name it (--app)";
  if (k.app !== undefined && (k.scope === "read" || k.scope === "admin")) return `${k.scope === "admin" ? "an" : "a"} ${k.scope} key covers every app of its environment: leave out the app`;
  if (k.app !== undefined && !ID_PATTERN.test(k.app)) return `app ${JSON.stringify(k.app)}: not an app id`;
  if (k.name !== undefined && k.name.length > 200) return "name: at most 200 characters";
  return undefined;
}

/** The keys and environments of a deployment, in its own schema (after migrateControl). */
export class KeyStore {
  constructor(private readonly sql: Sql) {}

  /** Makes a key, and its environment if new; returns the secret, which is kept nowhere. */
  async create(k: NewKey): Promise<{ key: ApiKey; secret: string }> {
    const problem = newKeyProblem(k);
    if (problem) throw new Error(problem);
    const secret = generateKey();
    const rows = await this.sql.transaction(async (tx) => {
      if (k.environment !== DEFAULT_ENVIRONMENT) {
        await tx.query("INSERT INTO environments (name) VALUES ($1) ON CONFLICT DO NOTHING", [k.environment]);
      }
      return tx.query<KeyRow>(
        `INSERT INTO api_keys (id, key_hash, environment, scope, app, name) VALUES ($1, $2, $3, $4, $5, $6)
         RETURNING id, environment, scope, app, name, created_at, revoked_at`,
        [randomUUID(), hashKey(secret), k.environment, k.scope, k.app ?? null, k.name ?? ""],
      );
    });
    return { key: toKey(rows[0]!), secret };
  }

  async list(options: { environment?: string; includeRevoked?: boolean } = {}): Promise<ApiKey[]> {
    const rows = await this.sql.query<KeyRow>(
      `SELECT id, environment, scope, app, name, created_at, revoked_at FROM api_keys
       WHERE ($1::text IS NULL OR environment = $1) AND ($2 OR revoked_at IS NULL)
       ORDER BY created_at, id`,
      [options.environment ?? null, options.includeRevoked ?? false],
    );
    return rows.map(toKey);
  }

  /** Revokes a key by id; false when there is no such key or it was revoked already. */
  async revoke(id: string): Promise<boolean> {
    if (!/^[0-9a-f-]{36}$/i.test(id)) return false;
    const rows = await this.sql.query(
      "UPDATE api_keys SET revoked_at = now(), changed_at = clock_timestamp() WHERE id = $1 AND revoked_at IS NULL RETURNING id",
      [id],
    );
    return rows.length > 0;
  }

  /** Every key not revoked, by hash, and a version that changes whenever a key is made or revoked. */
  async snapshot(): Promise<{ version: string; keys: Map<string, ApiKey> }> {
    const version = await this.version();
    const rows = await this.sql.query<KeyRow & { key_hash: string }>(
      "SELECT id, key_hash, environment, scope, app, name, created_at, revoked_at FROM api_keys WHERE revoked_at IS NULL",
    );
    return { version, keys: new Map(rows.map((r) => [r.key_hash, toKey(r)])) };
  }

  /** One cheap look: the latest change and the number of keys. */
  async version(): Promise<string> {
    const rows = await this.sql.query<{ v: string }>("SELECT coalesce(max(changed_at)::text, '') || '/' || count(*) AS v FROM api_keys");
    return rows[0]?.v ?? "";
  }

  /** The environments besides `default`. */
  async environments(): Promise<string[]> {
    const rows = await this.sql.query<{ name: string }>("SELECT name FROM environments ORDER BY name");
    return rows.map((r) => r.name);
  }
}

/**
 * Where an environment keeps its journal and its NATS streams. `default`
 * is the deployment's own schema and prefix, so a deployment made before
 * environments existed keeps its runs there; any other gets a schema and a
 * prefix of its own, so nothing crosses environments.
 */
export function environmentPlace(base: { schema: string | undefined; prefix: string }, environment: string): { schema: string | undefined; prefix: string } {
  if (environment === DEFAULT_ENVIRONMENT) return base;
  return { schema: `${base.schema ?? "stepwise"}_env_${environment.replaceAll("-", "_")}`, prefix: `${base.prefix}-env-${environment}` };
}
