import * as http from "node:http";
import * as http2 from "node:http2";
import * as net from "node:net";
import { Code, ConnectError, createConnectRouter, type ConnectRouter } from "@connectrpc/connect";
import type { UniversalHandler, UniversalServerResponse } from "@connectrpc/connect/protocol";
import {
  compressionBrotli,
  compressionGzip,
  universalRequestFromNodeRequest,
  universalResponseToNodeResponse,
} from "@connectrpc/connect-node";

/**
 * A handler for plain HTTP requests beside the Connect routes (metrics, the
 * dashboard's static files): true when it answered the request.
 */
export type PlainHandler = (
  req: http.IncomingMessage | http2.Http2ServerRequest,
  res: http.ServerResponse | http2.Http2ServerResponse,
  path: string,
) => boolean;

/** A listening Connect server. */
export interface RunningServer {
  /** The port it listens on (useful with port 0). */
  port: number;
  close(): Promise<void>;
}

const H2_PREFACE = "PRI * HTTP/2.0";

/**
 * Pings each HTTP/2 connection and destroys it when the peer stops
 * answering: a worker whose machine vanished holds a stream that TCP alone
 * would keep open for hours, and with it the executor's session state.
 */
function keepAlive(session: http2.ServerHttp2Session, intervalMs: number): void {
  const timer = setInterval(() => {
    if (session.closed || session.destroyed) return;
    // The answer may take as long as the interval.
    const deadline = setTimeout(() => session.destroy(), intervalMs);
    deadline.unref();
    const sent = session.ping((err) => {
      clearTimeout(deadline);
      if (err && !session.destroyed) session.destroy();
    });
    if (!sent) clearTimeout(deadline);
  }, intervalMs);
  timer.unref();
  session.once("close", () => clearInterval(timer));
}

/**
 * Serves Connect routes on one port for HTTP/1.1 and cleartext HTTP/2 alike:
 * gRPC and bidirectional streams need HTTP/2 (prior knowledge), while curl
 * and browsers speak Connect JSON or gRPC-Web over HTTP/1.1. The first bytes
 * of each connection say which it is. GET /healthz answers 200; the
 * `plain` handlers, in order, get the other paths that are not Connect's.
 */
export async function serveConnect(
  routes: (router: ConnectRouter) => void,
  port: number,
  host: string,
  options: { pingIntervalMs?: number; plain?: readonly PlainHandler[] } = {},
): Promise<RunningServer> {
  const handler = createNodeHandler(routes, options.plain ?? []);
  const h1 = http.createServer(handler);
  h1.keepAliveTimeout = 65_000;
  const h2 = http2.createServer({ settings: { maxConcurrentStreams: 10_000 } }, handler);
  const pingIntervalMs = options.pingIntervalMs ?? 15_000;
  h2.on("session", (session: http2.ServerHttp2Session) => keepAlive(session, pingIntervalMs));
  const sockets = new Set<net.Socket>();
  // noDelay: a step result and its ack are small writes that must not wait for Nagle.
  const server = net.createServer({ noDelay: true }, (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.once("readable", () => {
      const head = socket.read(H2_PREFACE.length) as Buffer | null ?? (socket.read() as Buffer | null);
      if (!head) {
        socket.once("readable", () => socket.destroy());
        return;
      }
      socket.unshift(head);
      if (head.toString("latin1").startsWith(H2_PREFACE)) h2.emit("connection", socket);
      else h1.emit("connection", socket);
    });
  });
  server.on("error", () => {});
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  const address = server.address() as net.AddressInfo;
  return {
    port: address.port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        h1.closeAllConnections();
        for (const s of sockets) s.destroy();
      }),
  };
}


/**
 * connect-node's adapter, with one change: a request body that does not
 * decode as protobuf is answered INVALID_ARGUMENT (the caller's fault, as
 * Connect already answers for malformed JSON) instead of INTERNAL.
 */
function createNodeHandler(routes: (router: ConnectRouter) => void, plain: readonly PlainHandler[]) {
  const router = createConnectRouter({
    acceptCompression: [compressionGzip, compressionBrotli],
    // Send takes up to 5,000 events; larger requests are refused with
    // RESOURCE_EXHAUSTED before they are read whole.
    readMaxBytes: 64 * 1024 * 1024,
  });
  routes(router);
  const paths = new Map<string, UniversalHandler>(router.handlers.map((h) => [h.requestPath, h]));
  return (req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse) => {
    const path = req.url?.split("?", 2)[0] ?? "";
    const uHandler = paths.get(path);
    if (!uHandler) {
      if (path === "/healthz") {
        res.writeHead(200, { "content-type": "text/plain" });
        res.end("ok\n");
        return;
      }
      for (const p of plain) if (p(req, res, path)) return;
      res.writeHead(404);
      res.end();
      return;
    }
    uHandler(universalRequestFromNodeRequest(req as never, res as never, undefined, undefined))
      .then(malformedInputIsInvalidArgument)
      .then((uRes) => universalResponseToNodeResponse(uRes, res as never))
      .catch((reason: unknown) => {
        if (ConnectError.from(reason).code === Code.Aborted) return;
        process.stderr.write(`handler for ${path} failed: ${String(reason)}\n`);
      });
  };
}

const PARSE_FAILED = "parse binary";

async function malformedInputIsInvalidArgument(res: UniversalServerResponse): Promise<UniversalServerResponse> {
  // gRPC and gRPC-Web: the status travels in headers (trailers-only) or trailers.
  for (const h of [res.header, res.trailer]) {
    if (h?.get("grpc-status") === String(Code.Internal) && decodeURIComponent(h.get("grpc-message") ?? "").startsWith(PARSE_FAILED)) {
      h.set("grpc-status", String(Code.InvalidArgument));
    }
  }
  // Connect unary: a JSON error body with an HTTP status.
  if (res.status === 500 && res.body && res.header?.get("content-type")?.startsWith("application/json")) {
    const chunks: Uint8Array[] = [];
    for await (const c of res.body) chunks.push(c);
    const text = Buffer.concat(chunks).toString();
    let body = text;
    let status = res.status;
    try {
      const err = JSON.parse(text) as { code?: string; message?: string };
      if (err.code === "internal" && err.message?.startsWith(PARSE_FAILED)) {
        status = 400;
        body = JSON.stringify({ ...err, code: "invalid_argument" });
      }
    } catch {
      // Not JSON after all: pass it through unchanged.
    }
    const header = new Headers(res.header);
    header.delete("content-length");
    return { ...res, status, header, body: (async function* () { yield Buffer.from(body); })() };
  }
  return res;
}
