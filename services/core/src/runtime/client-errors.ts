import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import type { Compression, UniversalServerResponse } from "@connectrpc/connect/protocol";
import { compressionBrotli, compressionGzip } from "@connectrpc/connect-node";

// A client's malformed input is the client's fault, and its answer says so:
// connect-es answers some of it INTERNAL (a body that does not decode as
// protobuf, a compressed envelope with no encoding, an encoding over bytes
// that are not in it), and an error message may quote what the client sent
// at any length. Here those become INVALID_ARGUMENT, and no error message
// is longer than MAX_ERROR_MESSAGE_LENGTH, whatever protocol carries it.

/** The most characters of an error message any reply carries. */
export const MAX_ERROR_MESSAGE_LENGTH = 512;

/** How connect-es starts the messages of errors that are the input's fault, though it codes them INTERNAL. */
const INPUT_FAILURES = ["parse binary", "received compressed envelope, but do not know how to decompress", "decompression failed"];

const isInputFailure = (code: Code | undefined, message: string) =>
  code === Code.Internal && INPUT_FAILURES.some((p) => message.startsWith(p));

/** A message cut to the bound, saying how long it was. */
export function boundedMessage(message: string): string {
  if (message.length <= MAX_ERROR_MESSAGE_LENGTH) return message;
  const note = ` … (${message.length} characters)`;
  return wellFormed(message.slice(0, MAX_ERROR_MESSAGE_LENGTH - note.length)) + note;
}

/** The text with lone surrogates (a pair cut in two) as U+FFFD, so it can be percent-encoded. */
function wellFormed(text: string): string {
  return text.replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, "\uFFFD");
}

/**
 * A value quoted for an error message: JSON, cut to `max` characters, so a
 * reply never echoes input of any length (a run id of a million characters).
 */
export function quote(value: string, max = 64): string {
  return value.length <= max ? JSON.stringify(value) : `${JSON.stringify(wellFormed(value.slice(0, max)))}… (${value.length} characters)`;
}

/** The error a reply carries: input failures as INVALID_ARGUMENT, every message bounded. */
export function clientError(err: unknown): unknown {
  if (!(err instanceof ConnectError)) return err;
  const input = isInputFailure(err.code, err.rawMessage);
  // A lone surrogate (input cut in two by a parser) cannot be percent-encoded into grpc-message.
  if (!input && err.rawMessage.length <= MAX_ERROR_MESSAGE_LENGTH && wellFormed(err.rawMessage) === err.rawMessage) return err;
  // The details are the server's own (OutgoingDetail), kept as they are.
  return new ConnectError(wellFormed(boundedMessage(err.rawMessage)), input ? Code.InvalidArgument : err.code, err.metadata, err.details as never, err.cause);
}

async function* mapErrors<T>(messages: AsyncIterable<T>): AsyncIterable<T> {
  try {
    yield* messages;
  } catch (err) {
    throw clientError(err);
  }
}

/**
 * The router's interceptor: errors of implementations, and the parse errors
 * of streamed requests (read as the implementation iterates them), as a
 * client should get them.
 */
export const clientErrors: Interceptor = (next) => async (req) => {
  try {
    const res = await next(req.stream ? { ...req, message: mapErrors(req.message) } : req);
    return res.stream ? { ...res, message: mapErrors(res.message) } : res;
  } catch (err) {
    throw clientError(err);
  }
};

function decompressing(c: Compression): Compression {
  return {
    name: c.name,
    compress: (bytes) => c.compress(bytes),
    decompress: (bytes, readMaxBytes) =>
      c.decompress(bytes, readMaxBytes).catch((err: unknown) => {
        throw clientError(err);
      }),
  };
}

/** gzip and br, answering INVALID_ARGUMENT for bytes that do not decompress. */
export const acceptCompression: Compression[] = [decompressing(compressionGzip), decompressing(compressionBrotli)];

/**
 * The answers of unary calls whose request did not parse (read by
 * connect-es before any interceptor): rewritten in each protocol's own
 * place for the status. gRPC has it in headers or trailers, gRPC-Web in
 * headers or the body's trailer frame, Connect in a JSON error body.
 */
export async function unaryInputErrors(res: UniversalServerResponse): Promise<UniversalServerResponse> {
  for (const h of [res.header, res.trailer]) {
    const message = percentDecoded(h?.get("grpc-message") ?? "");
    if (h?.get("grpc-status") === String(Code.Internal) && isInputFailure(Code.Internal, message)) h.set("grpc-status", String(Code.InvalidArgument));
    if (h?.has("grpc-message") && message.length > MAX_ERROR_MESSAGE_LENGTH) h.set("grpc-message", encodeURIComponent(wellFormed(boundedMessage(message))));
  }
  const contentType = res.header?.get("content-type") ?? "";
  if (!res.body) return res;
  if (res.status === 500 && contentType.startsWith("application/json")) {
    const text = Buffer.concat(await chunks(res.body)).toString();
    let body = text;
    let status = res.status;
    try {
      const err = JSON.parse(text) as { code?: string; message?: string };
      if (err.code === "internal" && isInputFailure(Code.Internal, err.message ?? "")) {
        status = 400;
        body = JSON.stringify({ ...err, code: "invalid_argument" });
      }
    } catch {
      // Not JSON after all: passed on unchanged.
    }
    return withBody(res, status, Buffer.from(body));
  }
  if (contentType.startsWith("application/grpc-web")) {
    const body = Buffer.concat(await chunks(res.body));
    return withBody(res, res.status, rewriteGrpcWebTrailer(body));
  }
  return res;
}

/** The body's trailer frame (flag 0x80) with an input failure's status as INVALID_ARGUMENT. */
function rewriteGrpcWebTrailer(body: Buffer): Buffer {
  const frames: Buffer[] = [];
  for (let at = 0; at + 5 <= body.length; ) {
    const flags = body[at]!;
    const len = body.readUInt32BE(at + 1);
    let frame = body.subarray(at, at + 5 + len);
    if (flags & 0x80) {
      const lines = frame.subarray(5).toString().split("\r\n");
      const field = (name: string) => lines.find((l) => l.toLowerCase().startsWith(`${name}:`))?.slice(name.length + 1).trim();
      const message = percentDecoded(field("grpc-message") ?? "");
      if (field("grpc-status") === String(Code.Internal) && isInputFailure(Code.Internal, message)) {
        const text = lines.map((l) => (l.toLowerCase().startsWith("grpc-status:") ? `grpc-status: ${Code.InvalidArgument}` : l)).join("\r\n");
        const data = Buffer.from(text);
        const head = Buffer.alloc(5);
        head.writeUInt8(flags, 0);
        head.writeUInt32BE(data.length, 1);
        frame = Buffer.concat([head, data]);
      }
    }
    frames.push(frame);
    at += 5 + len;
  }
  return Buffer.concat(frames);
}

/** grpc-message as text; as it came when it is not valid percent-encoding (a lone surrogate's bytes). */
function percentDecoded(value: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}

async function chunks(body: AsyncIterable<Uint8Array>): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  for await (const c of body) out.push(c);
  return out;
}

function withBody(res: UniversalServerResponse, status: number, body: Buffer): UniversalServerResponse {
  const header = new Headers(res.header);
  header.delete("content-length");
  return { ...res, status, header, body: (async function* () { yield body; })() };
}
