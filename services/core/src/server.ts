import * as http from "node:http";
import * as http2 from "node:http2";
import * as net from "node:net";
import type { ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";

/** A listening Connect server. */
export interface RunningServer {
  /** The port it listens on (useful with port 0). */
  port: number;
  close(): Promise<void>;
}

const H2_PREFACE = "PRI * HTTP/2.0";

/**
 * Serves Connect routes on one port for HTTP/1.1 and cleartext HTTP/2 alike:
 * gRPC and bidirectional streams need HTTP/2 (prior knowledge), while curl
 * and browsers speak Connect JSON or gRPC-Web over HTTP/1.1. The first bytes
 * of each connection say which it is. GET /healthz answers 200.
 */
export async function serveConnect(
  routes: (router: ConnectRouter) => void,
  port: number,
  host: string,
): Promise<RunningServer> {
  const handler = connectNodeAdapter({
    routes,
    fallback(req, res) {
      if (req.url === "/healthz") {
        res.writeHead(200, { "content-type": "text/plain" });
        res.end("ok\n");
        return;
      }
      res.writeHead(404);
      res.end();
    },
  });
  const h1 = http.createServer(handler);
  h1.keepAliveTimeout = 65_000;
  const h2 = http2.createServer({ settings: { maxConcurrentStreams: 10_000 } }, handler);
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
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
