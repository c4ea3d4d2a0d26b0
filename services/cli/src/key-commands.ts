import { parseArgs } from "node:util";
import { createPgSql, DEFAULT_ENVIRONMENT, KEY_SCOPES, KeyStore, type KeyScope, loadConfig, migrateControl, newKeyProblem } from "@stepwise/core";
import { UsageError } from "./client-commands.js";

export const KEYS_USAGE = `Usage:
  stepwise keys create --scope event|worker|read|admin [--env E] [--app A] [--name N]
      Makes an API key and prints it, once: only its hash is kept. --env (default "default")
      is the environment it acts in, made if new; a worker key names the one app it registers as,
      and an event key with --app sends events that reach only that app's functions and waits.
  stepwise keys list [--env E] [--all]
      The keys (not revoked, or --all), without their secrets.
  stepwise keys revoke ID
      Revokes a key; every service refuses it within 2 seconds.
Keys live in the deployment's journal: these commands use DATABASE_URL and DATABASE_SCHEMA,
not a running engine. Each takes --json.`;

const OPTIONS = {
  scope: { type: "string" },
  env: { type: "string" },
  app: { type: "string" },
  name: { type: "string" },
  all: { type: "boolean", default: false },
  json: { type: "boolean", default: false },
  help: { type: "boolean", short: "h", default: false },
} as const;

/** Runs `stepwise keys ...` against the journal; writes to out, returns the exit code. */
export async function keysCommand(args: string[], out: (s: string) => void): Promise<number> {
  const [sub, ...rest] = args;
  const { values, positionals } = parseArgs({ args: rest, options: OPTIONS, allowPositionals: true });
  if (values.help || sub === undefined || sub === "help" || sub === "--help") {
    out(`${KEYS_USAGE}\n`);
    return 0;
  }
  const config = loadConfig();
  const sql = createPgSql({ url: config.databaseUrl, max: 1, applicationName: "stepwise-keys", ...(config.databaseSchema ? { schema: config.databaseSchema } : {}) });
  try {
    await migrateControl(sql, { schema: config.databaseSchema });
    const keys = new KeyStore(sql);
    switch (sub) {
      case "create": {
        const request = { environment: values.env ?? DEFAULT_ENVIRONMENT, scope: (values.scope ?? "") as KeyScope, app: values.app, name: values.name };
        if (!values.scope) throw new UsageError(`--scope: one of ${KEY_SCOPES.join(", ")}`, KEYS_USAGE);
        const problem = newKeyProblem(request);
        if (problem) throw new UsageError(problem, KEYS_USAGE);
        const { key, secret } = await keys.create(request);
        if (values.json) out(`${JSON.stringify({ ...key, secret })}\n`);
        else {
          out(`${secret}\n`);
          process.stderr.write(`key ${key.id}: ${key.scope} in ${key.environment}${key.app ? ` for app ${key.app}` : ""}. It is shown this once.\n`);
        }
        return 0;
      }
      case "list": {
        const list = await keys.list({ ...(values.env ? { environment: values.env } : {}), includeRevoked: values.all });
        if (values.json) out(`${JSON.stringify(list)}\n`);
        else {
          out(`${["ID", "ENVIRONMENT", "SCOPE", "APP", "NAME", "CREATED", "REVOKED"].join("\t")}\n`);
          for (const k of list) {
            out(`${[k.id, k.environment, k.scope, k.app ?? "-", k.name || "-", k.createdAt.toISOString(), k.revokedAt?.toISOString() ?? "-"].join("\t")}\n`);
          }
        }
        return 0;
      }
      case "revoke": {
        const id = positionals[0];
        if (!id) throw new UsageError("revoke: name the key's ID (stepwise keys list shows it)", KEYS_USAGE);
        if (!(await keys.revoke(id))) {
          process.stderr.write(`stepwise: no key ${JSON.stringify(id)} that is not revoked already\n`);
          return 1;
        }
        out(values.json ? `${JSON.stringify({ id, revoked: true })}\n` : `revoked ${id}\n`);
        return 0;
      }
      default:
        throw new UsageError(`unknown keys command ${JSON.stringify(sub)}`, KEYS_USAGE);
    }
  } finally {
    await sql.close();
  }
}
