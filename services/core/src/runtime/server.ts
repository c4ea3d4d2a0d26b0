import * as http from "node:http";
import * as http2 from "node:http2";
import * as net from "node:net";
import { Code, ConnectError, createConnectRouter, type ConnectRouter, type Interceptor } from "@connectrpc/connect";
import type { UniversalHandler } from "@connectrpc/connect/protocol";
import { universalRequestFromNodeRequest, universalResponseToNodeResponse } from "@connectrpc/connect-node";
import { acceptCompression, clientErrors, unaryInputErrors } from "./client-errors.js";

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
  options: {
    pingIntervalMs?: number;
    plain?: readonly PlainHandler[];
    tls?: TlsFiles | undefined;
    /** Run after clientErrors, before the implementations (authentication). */
    interceptors?: readonly Interceptor[];
  } = {},
): Promise<RunningServer> {
  const handler = createNodeHandler(routes, options.plain ?? [], options.interceptors ?? []);
  if (options.tls) return serveTls(handler, port, host, options.tls, options.pingIntervalMs ?? 15_000);
  const h1 = http.createServer(handler);
  h1.keepAliveTimeout = 65_000;
  // maxSessionMemory (MB): a client sending many large requests at once on its one
  // connection (Sends of thousands of events) is not refused at 10 MB, the default.
  const h2 = http2.createServer({ settings: { maxConcurrentStreams: 10_000 }, maxSessionMemory: 256 }, handler);
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
  return listen(server, port, host, sockets, () => h1.closeAllConnections());
}

/** Listens, and answers with the port and a close() that also ends every open connection. */
async function listen(server: net.Server, port: number, host: string, sockets: ReadonlySet<net.Socket>, beforeDestroy = () => {}): Promise<RunningServer> {
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
        beforeDestroy();
        for (const s of sockets) s.destroy();
      }),
  };
}


/** A certificate (chain) and its private key, PEM. */
export interface TlsFiles {
  cert: string | Buffer;
  key: string | Buffer;
}

/**
 * The same routes over TLS: ALPN chooses HTTP/2 (gRPC, Connect, the
 * worker's stream) or HTTP/1.1 (curl, browsers) per connection.
 */
async function serveTls(
  handler: ReturnType<typeof createNodeHandler>,
  port: number,
  host: string,
  tls: TlsFiles,
  pingIntervalMs: number,
): Promise<RunningServer> {
  const server = http2.createSecureServer(
    { cert: tls.cert, key: tls.key, allowHTTP1: true, settings: { maxConcurrentStreams: 10_000 }, maxSessionMemory: 256 },
    handler,
  );
  server.on("session", (session: http2.ServerHttp2Session) => keepAlive(session, pingIntervalMs));
  const sockets = new Set<net.Socket>();
  server.on("connection", (socket: net.Socket) => {
    socket.setNoDelay(true);
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  // A client that fails the handshake (plain HTTP, an untrusted certificate) costs only its socket.
  server.on("tlsClientError", (_err, socket) => socket.destroy());
  return listen(server, port, host, sockets);
}

/**
 * connect-node's adapter, with one change: a client's malformed input is
 * answered INVALID_ARGUMENT in every protocol, and no error message is
 * unbounded (client-errors.ts).
 */
function createNodeHandler(routes: (router: ConnectRouter) => void, plain: readonly PlainHandler[], interceptors: readonly Interceptor[]) {
  const router = createConnectRouter({
    acceptCompression,
    interceptors: [clientErrors, ...interceptors],
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
    const unary = uHandler.method.methodKind === "unary";
    uHandler(universalRequestFromNodeRequest(req as never, res as never, undefined, undefined))
      .then((uRes) => (unary ? unaryInputErrors(uRes) : uRes))
      .then((uRes) => universalResponseToNodeResponse(uRes, res as never))
      .catch((reason: unknown) => {
        if (ConnectError.from(reason).code === Code.Aborted) return;
        process.stderr.write(`handler for ${path} failed: ${String(reason)}\n`);
        // Never silence: a request whose answer could not be written gets a bare 500 if nothing was sent yet.
        if (!res.headersSent && !res.destroyed) {
          res.writeHead(500);
          res.end();
        } else if (!res.writableEnded) res.destroy();
      });
  };
}
