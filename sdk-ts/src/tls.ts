import { readFileSync } from "node:fs";
import type { SecureClientSessionOptions } from "node:http2";

/**
 * The TLS options of a transport to an `https://` URL: the CA to trust
 * besides the system's (the `ca` option, or the PEM file named by
 * STEPWISE_CA_FILE), for an engine whose certificate a private CA signed.
 * Node's own NODE_EXTRA_CA_CERTS works as well.
 */
export function tlsOptions(url: string, ca: string | Buffer | undefined): { nodeOptions?: SecureClientSessionOptions } {
  if (!url.startsWith("https:")) return {};
  const file = process.env["STEPWISE_CA_FILE"];
  const pem = ca ?? (file ? readFileSync(file) : undefined);
  return pem === undefined ? {} : { nodeOptions: { ca: pem } };
}
