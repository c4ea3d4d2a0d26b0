// The four protocols a Stepwise port speaks, spoken by hand so that the fuzz
// can send what no well-behaved client would: any bytes as a message, broken
// envelopes, encodings over garbage. Each call answers with the status the
// server gave in that protocol's own terms, mapped to one code name.
import * as http2 from "node:http2";

export type Protocol = "connect-json" | "connect-proto" | "grpc" | "grpc-web";
export const PROTOCOLS: readonly Protocol[] = ["connect-json", "connect-proto", "grpc", "grpc-web"];

/** gRPC status numbers by their Connect code names. */
const CODE_NAMES = [
  "ok", "canceled", "unknown", "invalid_argument", "deadline_exceeded", "not_found", "already_exists", "permission_denied",
  "resource_exhausted", "failed_precondition", "aborted", "out_of_range", "unimplemented", "internal", "unavailable",
  "data_loss", "unauthenticated",
] as const;

/** What the server answered to one input. */
export interface Answer {
  /** The HTTP status of the response. */
  httpStatus: number;
  /** "ok", or the error's code name (Connect's names; gRPC numbers mapped to them); "none" when no status came. */
  code: string;
  /** The error message, when there is one. */
  message: string;
  /** Everything the server sent back (headers' values, body, trailers), for the leak and echo checks. */
  text: string;
  /** The response body (its first 4 MiB). */
  body: Buffer;
}

/** One request as bytes on the wire. */
export interface WireRequest {
  /** `/stepwise.v1.RunService/GetRun` and the like. */
  path: string;
  protocol: Protocol;
  /** The messages, each already encoded (JSON text or binary); a unary call sends the first unless `raw` is set. */
  messages: readonly Uint8Array[];
  /** For unary Connect: the body as is. For the enveloped protocols: the whole body, envelopes included. */
  raw?: Uint8Array;
  /** Extra request headers (content-encoding, grpc-encoding, a wrong content-type). */
  headers?: Record<string, string>;
  /** A streaming method: enveloped also over Connect. */
  streaming: boolean;
  timeoutMs: number;
  /** A deadline the request carries (connect-timeout-ms, grpc-timeout), which the server must keep. */
  deadlineMs?: number | undefined;
}

/** An envelope: a flags byte, the length, the message. */
export function envelope(message: Uint8Array, flags = 0, length = message.length): Uint8Array {
  const out = new Uint8Array(5 + message.length);
  const view = new DataView(out.buffer);
  view.setUint8(0, flags);
  view.setUint32(1, length >>> 0);
  out.set(message, 5);
  return out;
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  return Buffer.concat(parts.map((p) => Buffer.from(p.buffer, p.byteOffset, p.byteLength)));
}

function contentType(req: WireRequest): string {
  switch (req.protocol) {
    case "connect-json":
      return req.streaming ? "application/connect+json" : "application/json";
    case "connect-proto":
      return req.streaming ? "application/connect+proto" : "application/proto";
    case "grpc":
      return "application/grpc+proto";
    case "grpc-web":
      return "application/grpc-web+proto";
  }
}

function body(req: WireRequest): Uint8Array {
  if (req.raw) return req.raw;
  if (!req.streaming && req.protocol.startsWith("connect")) return req.messages[0] ?? new Uint8Array();
  return concat(req.messages.map((m) => envelope(m)));
}

/** Reads the status out of the envelopes of a response (Connect streaming's end message, gRPC-Web's trailer frame). */
function statusInEnvelopes(buf: Buffer, protocol: Protocol): { code: string; message: string } | undefined {
  let at = 0;
  while (at + 5 <= buf.length) {
    const flags = buf[at]!;
    const len = buf.readUInt32BE(at + 1);
    const data = buf.subarray(at + 5, at + 5 + len);
    at += 5 + len;
    if (protocol === "grpc-web" && flags & 0x80) {
      const t = Object.fromEntries(
        data.toString().split("\r\n").filter((l) => l.includes(":")).map((l) => [l.slice(0, l.indexOf(":")).trim().toLowerCase(), l.slice(l.indexOf(":") + 1).trim()]),
      );
      return fromGrpc(t["grpc-status"], t["grpc-message"]);
    }
    if (protocol.startsWith("connect") && flags & 0x02) {
      try {
        const end = JSON.parse(data.toString()) as { error?: { code?: string; message?: string } };
        return end.error ? { code: end.error.code ?? "unknown", message: end.error.message ?? "" } : { code: "ok", message: "" };
      } catch {
        return { code: "malformed-end-stream", message: data.toString().slice(0, 200) };
      }
    }
  }
  return undefined;
}

function fromGrpc(status: string | undefined, message: string | undefined): { code: string; message: string } | undefined {
  if (status === undefined) return undefined;
  const n = Number(status);
  return { code: CODE_NAMES[n] ?? `grpc-${status}`, message: decodeURIComponent(message ?? "") };
}

/**
 * One HTTP/2 connection to a Stepwise port, on which every request is
 * sent (all four protocols are served over it; Connect and gRPC-Web are
 * HTTP-version agnostic).
 */
export class WireClient {
  private session: http2.ClientHttp2Session | undefined;

  constructor(private readonly url: string) {}

  private connect(): http2.ClientHttp2Session {
    if (!this.session || this.session.closed || this.session.destroyed) {
      // The client too must hold many large requests at once (10 MB by default).
      const s = http2.connect(this.url, { maxSessionMemory: 512 });
      s.on("error", () => {});
      s.setMaxListeners(0);
      this.session = s;
    }
    return this.session;
  }

  close(): void {
    this.session?.close();
  }

  /**
   * Sends one request. A stream the server refused before it read it
   * (REFUSED_STREAM: HTTP/2's "not processed, send again") is sent again,
   * as any HTTP/2 client does, up to three times; `refused` counts them.
   */
  async send(req: WireRequest): Promise<Answer> {
    for (let attempt = 0; ; attempt++) {
      const answer = await this.sendOnce(req);
      if (answer.code !== "stream-error" || !answer.message.includes("REFUSED_STREAM") || attempt === 3) return answer;
      this.refused++;
      await new Promise((r) => setTimeout(r, 50 * (attempt + 1)));
    }
  }

  /** Streams the server refused unread, sent again. */
  refused = 0;

  private sendOnce(req: WireRequest): Promise<Answer> {
    return new Promise<Answer>((resolve) => {
      const headers: http2.OutgoingHttpHeaders = {
        ":method": "POST",
        ":path": req.path,
        "content-type": contentType(req),
        ...(req.protocol === "grpc" ? { te: "trailers" } : {}),
        ...(req.protocol.startsWith("connect") && !req.streaming ? { "connect-protocol-version": "1" } : {}),
        ...(req.deadlineMs === undefined ? {} : req.protocol.startsWith("connect") ? { "connect-timeout-ms": String(req.deadlineMs) } : { "grpc-timeout": `${req.deadlineMs}m` }),
        ...req.headers,
      };
      const stream = this.connect().request(headers, { endStream: false });
      const chunks: Buffer[] = [];
      let head: http2.IncomingHttpHeaders = {};
      let trailers: http2.IncomingHttpHeaders = {};
      let settled = false;
      const finish = (override?: { code: string; message: string }) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        const buf = Buffer.concat(chunks);
        const httpStatus = Number(head[":status"] ?? 0);
        const text = [JSON.stringify(head), buf.toString("latin1"), JSON.stringify(trailers)].join("\n");
        let status = override;
        if (!status) {
          if (req.protocol === "grpc") {
            status = fromGrpc(trailers["grpc-status"] as string | undefined, trailers["grpc-message"] as string | undefined)
              ?? fromGrpc(head["grpc-status"] as string | undefined, head["grpc-message"] as string | undefined);
          } else if (req.protocol === "grpc-web") {
            status = fromGrpc(head["grpc-status"] as string | undefined, head["grpc-message"] as string | undefined) ?? statusInEnvelopes(buf, req.protocol);
          } else if (req.streaming) {
            status = httpStatus === 200 ? statusInEnvelopes(buf, req.protocol) : connectUnaryStatus(httpStatus, buf);
          } else {
            status = connectUnaryStatus(httpStatus, buf);
          }
        }
        status ??= { code: httpStatus >= 500 ? "http-5xx" : "none", message: "" };
        resolve({ httpStatus, code: status.code, message: status.message, text, body: buf });
      };
      const timer = setTimeout(() => {
        stream.close(http2.constants.NGHTTP2_CANCEL);
        finish({ code: "no-answer", message: `no answer within ${req.timeoutMs} ms` });
      }, req.timeoutMs);
      stream.on("response", (h) => (head = h));
      stream.on("trailers", (t) => (trailers = t));
      stream.on("data", (c: Buffer) => {
        // Enough to judge; a flood of answers is not read whole.
        if (chunks.reduce((n, b) => n + b.length, 0) < 4 * 1024 * 1024) chunks.push(c);
      });
      stream.on("end", () => finish());
      stream.on("close", () => finish());
      stream.on("error", (err) => finish({ code: "stream-error", message: String(err) }));
      stream.end(body(req));
    });
  }
}

function connectUnaryStatus(httpStatus: number, buf: Buffer): { code: string; message: string } {
  if (httpStatus === 200) return { code: "ok", message: "" };
  try {
    const err = JSON.parse(buf.toString()) as { code?: string; message?: string };
    return { code: err.code ?? `http-${httpStatus}`, message: err.message ?? "" };
  } catch {
    return { code: `http-${httpStatus}`, message: buf.toString().slice(0, 200) };
  }
}
