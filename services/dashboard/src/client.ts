import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { IngestService, RunService } from "@stepwise/proto";

// The dashboard reads and steers the engine through the public RPCs only,
// as curl and other languages do: Connect with JSON over HTTP/1.1, to the
// ingest that served the page.

/** Where the API key the user gave is kept, in this browser only. */
const KEY_ITEM = "stepwise.apiKey";

/** The API key the user gave, if any. */
export function storedKey(): string | null {
  try {
    return window.localStorage.getItem(KEY_ITEM);
  } catch {
    return null;
  }
}

/** Keeps the key (or forgets it, with null) for every later call. */
export function storeKey(key: string | null): void {
  if (key === null) window.localStorage.removeItem(KEY_ITEM);
  else window.localStorage.setItem(KEY_ITEM, key);
}

const refusals = new Set<(code: Code) => void>();

/** Calls `fn` whenever the engine refuses the key (none, unknown, revoked: UNAUTHENTICATED). */
export function onKeyRefused(fn: (code: Code) => void): () => void {
  refusals.add(fn);
  return () => refusals.delete(fn);
}

/** Sends the stored key as a bearer token, and reports a refused one. */
const withKey: Interceptor = (next) => async (req) => {
  const key = storedKey();
  if (key) req.header.set("authorization", `Bearer ${key}`);
  try {
    return await next(req);
  } catch (err) {
    const code = ConnectError.from(err).code;
    if (code === Code.Unauthenticated) for (const fn of refusals) fn(code);
    throw err;
  }
};

const transport = createConnectTransport({ baseUrl: window.location.origin, useBinaryFormat: false, interceptors: [withKey] });

/** RunService: runs, functions, events, workers; cancel, rerun, replay. */
export const runs: Client<typeof RunService> = createClient(RunService, transport);

/** IngestService: the send-event form. */
export const ingest: Client<typeof IngestService> = createClient(IngestService, transport);
