import { Code, ConnectError, createContextKey, type HandlerContext, type Interceptor } from "@connectrpc/connect";
import { DEFAULT_ENVIRONMENT, type KeyScope } from "./api-keys.js";
import type { KeyCache } from "./key-cache.js";

/** Who makes a call: the environment it acts in, and what its key allows. */
export interface Caller {
  environment: string;
  /** The key's scope; "any" for a keyless call to an engine started insecure. */
  scope: KeyScope | "any";
  /** The app a worker key registers as, or the one app an event key's events reach; null for every app. */
  app: string | null;
  /** The key's id (for logs); null without a key. */
  keyId: string | null;
}

/** Set by authenticate() on every call it lets through. */
export const CALLER = createContextKey<Caller | undefined>(undefined, { description: "stepwise caller" });

/** The caller of a call, when the server authenticates (undefined in `stepwise dev`). */
export function callerOf(ctx: HandlerContext): Caller | undefined {
  return ctx.values.get(CALLER);
}

/** RunService methods that change runs: admin keys only. */
const RUN_CONTROL = new Set(["CancelRun", "CancelRuns", "RerunRun", "ReplayRun", "RerunRuns"]);

/** The scopes that may call a method; an unknown service needs admin. */
export function scopesFor(service: string, method: string): readonly KeyScope[] {
  switch (service) {
    case "stepwise.v1.IngestService":
      // admin too: the dashboard's send-event form.
      return ["event", "admin"];
    case "stepwise.v1.WorkerService":
      return ["worker"];
    case "stepwise.v1.RunService":
      return RUN_CONTROL.has(method) ? ["admin"] : ["read", "admin"];
    default:
      return ["admin"];
  }
}

/** The key of an `Authorization: Bearer KEY` header; undefined without the header, null when it is malformed. */
export function bearerKey(header: string | null): string | undefined | null {
  if (header === null) return undefined;
  const m = /^Bearer ([\x21-\x7e]{1,256})$/i.exec(header.trim());
  return m ? m[1]! : null;
}

const ANY: Caller = { environment: DEFAULT_ENVIRONMENT, scope: "any", app: null, keyId: null };

/**
 * The router's interceptor that lets a call through only with a key that
 * allows it: none, malformed, unknown or revoked is UNAUTHENTICATED, a
 * key of another scope is PERMISSION_DENIED, both before the
 * implementation runs, so nothing is read or stored, and neither says
 * anything of what the call asked about. The key decides the environment
 * the call acts in (CALLER). `insecure` lets keyless calls act in
 * `default` with every right; a key that is sent is checked all the same.
 */
export function authenticate(keys: KeyCache, options: { insecure: boolean }): Interceptor {
  return (next) => async (req) => {
    const secret = bearerKey(req.header.get("authorization"));
    if (secret === undefined && options.insecure) {
      req.contextValues.set(CALLER, ANY);
      return next(req);
    }
    if (secret === undefined) throw new ConnectError("an API key is required: Authorization: Bearer KEY", Code.Unauthenticated);
    if (secret === null) throw new ConnectError("Authorization: expected Bearer and an API key", Code.Unauthenticated);
    const key = await keys.lookup(secret);
    if (!key) throw new ConnectError("the API key is unknown or revoked", Code.Unauthenticated);
    const allowed = scopesFor(req.service.typeName, req.method.name);
    if (!allowed.includes(key.scope)) {
      throw new ConnectError(`a ${key.scope} key may not call ${req.method.name}: it needs a ${allowed.join(" or ")} key`, Code.PermissionDenied);
    }
    req.contextValues.set(CALLER, { environment: key.environment, scope: key.scope, app: key.app, keyId: key.id });
    const res = await next(req);
    // A stream lives no longer than its key: revoked, it ends with UNAUTHENTICATED (a worker stops getting runs).
    return res.stream ? { ...res, message: untilRevoked(res.message, keys, key.id) } : res;
  };
}

/** The messages of a response stream until the key is revoked; then the stream fails, and the handler's is ended. */
async function* untilRevoked<T>(messages: AsyncIterable<T>, keys: KeyCache, keyId: string): AsyncIterable<T> {
  const it = messages[Symbol.asyncIterator]();
  let revoke: () => void = () => {};
  const revoked = new Promise<typeof REVOKED>((resolve) => (revoke = () => resolve(REVOKED)));
  const stop = keys.onRevoked(keyId, revoke);
  try {
    for (;;) {
      const next = await Promise.race([it.next(), revoked]);
      if (next === REVOKED) throw new ConnectError("the API key was revoked", Code.Unauthenticated);
      if (next.done) return;
      yield next.value;
    }
  } finally {
    stop();
    // Ends the handler's stream: its cleanup (a worker session's end) runs once it next yields.
    void it.return?.()?.catch(() => {});
  }
}

const REVOKED = Symbol("revoked");
