import * as http2 from "node:http2";
import * as net from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { serveConnect, type RunningServer } from "./server.js";

// One port for HTTP/1.1 (curl, Connect JSON, gRPC-Web) and cleartext HTTP/2
// (gRPC, bidirectional streams), and dead HTTP/2 peers are let go.
describe("serveConnect", () => {
  let server: RunningServer | undefined;

  afterEach(async () => {
    await server?.close();
    server = undefined;
  });

  it("answers /healthz over HTTP/1.1 and HTTP/2 on the same port, 404 elsewhere", async () => {
    server = await serveConnect(() => {}, 0, "127.0.0.1");
    const base = `http://127.0.0.1:${server.port}`;
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    expect((await fetch(`${base}/nope`)).status).toBe(404);

    const client = http2.connect(base);
    const status = await new Promise<number>((resolve, reject) => {
      const req = client.request({ ":path": "/healthz" });
      req.on("response", (h) => resolve(Number(h[":status"])));
      req.on("error", reject);
      req.end();
    });
    client.close();
    expect(status).toBe(200);
  });

  it("hands the paths Connect does not serve to the plain handlers, in order, and answers 404 when none takes one", async () => {
    const seen: string[] = [];
    server = await serveConnect(() => {}, 0, "127.0.0.1", {
      plain: [
        (_req, res, path) => {
          seen.push(path);
          if (path !== "/metrics") return false;
          res.writeHead(200, { "content-type": "text/plain" });
          res.end("m 1\n");
          return true;
        },
        (_req, res, path) => {
          if (!path.startsWith("/app")) return false;
          res.writeHead(200);
          res.end("app");
          return true;
        },
      ],
    });
    const base = `http://127.0.0.1:${server.port}`;
    expect(await (await fetch(`${base}/metrics?x=1`)).text()).toBe("m 1\n");
    expect(await (await fetch(`${base}/app/runs`)).text()).toBe("app");
    expect((await fetch(`${base}/other`)).status).toBe(404);
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    expect(seen).toEqual(["/metrics", "/app/runs", "/other"]);
  });

  it("destroys an HTTP/2 connection whose peer stops answering pings", async () => {
    server = await serveConnect(() => {}, 0, "127.0.0.1", { pingIntervalMs: 100 });
    // A raw peer: the HTTP/2 preface, its SETTINGS and the ACK of the
    // server's, then silence. It never acknowledges a ping, as a vanished
    // machine would not.
    const socket = net.connect(server.port, "127.0.0.1");
    await new Promise((r) => socket.once("connect", r));
    socket.write(
      Buffer.concat([
        Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1"),
        Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]), // SETTINGS, empty
        Buffer.from([0, 0, 0, 4, 1, 0, 0, 0, 0]), // SETTINGS ACK
      ]),
    );
    let pinged = false;
    socket.on("data", (d: Buffer) => {
      // A PING frame (type 6) from the server.
      for (let i = 0; i + 9 <= d.length; ) {
        const len = d.readUIntBE(i, 3);
        if (d[i + 3] === 6) pinged = true;
        i += 9 + len;
      }
    });
    const started = Date.now();
    await new Promise((r) => socket.once("close", r));
    expect(pinged).toBe(true);
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it("keeps a responsive HTTP/2 connection open across many pings", async () => {
    server = await serveConnect(() => {}, 0, "127.0.0.1", { pingIntervalMs: 50 });
    const session = http2.connect(`http://127.0.0.1:${server.port}`);
    let closed = false;
    session.on("close", () => (closed = true));
    await new Promise((r) => setTimeout(r, 600));
    expect(closed).toBe(false);
    session.close();
  });
});
