import type { Interceptor } from "@connectrpc/connect";

/**
 * The transport options that send an API key (the `apiKey` option, or
 * STEPWISE_API_KEY) as `Authorization: Bearer KEY` on every call. An
 * engine started without keys (`stepwise dev`) ignores it.
 */
export function apiKeyOptions(apiKey: string | undefined): { interceptors?: Interceptor[] } {
  const key = apiKey ?? process.env["STEPWISE_API_KEY"];
  if (!key) return {};
  const header = `Bearer ${key}`;
  return {
    interceptors: [
      (next) => (req) => {
        req.header.set("authorization", header);
        return next(req);
      },
    ],
  };
}
