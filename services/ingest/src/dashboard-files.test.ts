import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { serveConnect, type RunningServer } from "@stepwise/core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dashboardFiles, decodePath } from "./dashboard-files.js";

// The dashboard's files as ingest serves them: index.html for / and the
// client routes, the hashed assets cached for good, the right types, and
// nothing outside the folder.

/** One raw HTTP/1.1 request, the path sent as written (fetch would resolve "..").*/
function rawGet(port: number, path: string): Promise<{ status: number; head: string; body: string }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1", () => socket.write(`GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`));
    let data = "";
    socket.on("data", (d: Buffer) => (data += d.toString()));
    socket.on("error", reject);
    socket.on("end", () => {
      const [head = "", body = ""] = data.split("\r\n\r\n", 2);
      resolve({ status: Number(head.split(" ")[1]), head, body });
    });
  });
}

describe("dashboard files", () => {
  let dir: string;
  let outside: string;
  let server: RunningServer;
  let base: string;

  beforeAll(async () => {
    const root = mkdtempSync(join(tmpdir(), "dash-"));
    dir = join(root, "dist");
    outside = join(root, "secret.txt");
    mkdirSync(join(dir, "assets"), { recursive: true });
    writeFileSync(join(dir, "index.html"), "<!doctype html><title>Stepwise</title>");
    writeFileSync(join(dir, "assets", "index-AbC123.js"), "console.log(1)");
    writeFileSync(join(dir, "assets", "index-AbC123.css"), "body{}");
    writeFileSync(join(dir, "robots.txt"), "User-agent: *");
    writeFileSync(outside, "secret");
    server = await serveConnect(() => {}, 0, "127.0.0.1", { plain: [dashboardFiles(dir)] });
    base = `http://127.0.0.1:${server.port}`;
  });

  afterAll(async () => {
    await server?.close();
    rmSync(join(dir, ".."), { recursive: true, force: true });
  });

  it("answers index.html, not cached, for / and each client route", async () => {
    for (const path of ["/", "/runs", "/runs/0193f1c2-0000-7000-8000-000000000000", "/functions/shop/order", "/events?name=x", "/workers"]) {
      const res = await fetch(`${base}${path}`);
      expect(res.status, path).toBe(200);
      expect(res.headers.get("content-type")).toBe("text/html; charset=utf-8");
      expect(res.headers.get("cache-control")).toBe("no-cache");
      expect(res.headers.get("content-security-policy")).toContain("default-src 'self'");
      expect(await res.text()).toContain("<title>Stepwise</title>");
    }
  });

  it("serves the assets with their content types, the hashed ones cached for good, and answers 304 to a matching ETag", async () => {
    const js = await fetch(`${base}/assets/index-AbC123.js`);
    expect(js.status).toBe(200);
    expect(js.headers.get("content-type")).toBe("text/javascript; charset=utf-8");
    expect(js.headers.get("cache-control")).toBe("public, max-age=31536000, immutable");
    expect(js.headers.get("x-content-type-options")).toBe("nosniff");
    expect(await js.text()).toBe("console.log(1)");
    const css = await fetch(`${base}/assets/index-AbC123.css`);
    expect(css.headers.get("content-type")).toBe("text/css; charset=utf-8");
    const txt = await fetch(`${base}/robots.txt`);
    expect(txt.headers.get("cache-control")).toBe("no-cache");
    const again = await fetch(`${base}/assets/index-AbC123.js`, { headers: { "if-none-match": js.headers.get("etag")! } });
    expect(again.status).toBe(304);
    const head = await fetch(`${base}/`, { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.headers.get("content-length")).toBe(String("<!doctype html><title>Stepwise</title>".length));
  });

  it("leaves other paths to the next handler (404 here), and other methods", async () => {
    expect((await fetch(`${base}/assets/missing.js`)).status).toBe(404);
    expect((await fetch(`${base}/metrics`)).status).toBe(404);
    expect((await fetch(`${base}/runs`, { method: "POST", body: "{}" })).status).toBe(404);
  });

  it("refuses paths that leave its folder, however they are written", async () => {
    for (const path of ["/../secret.txt", "/assets/../../secret.txt", "/%2e%2e/secret.txt", "/assets/%2e%2e%2f%2e%2e%2fsecret.txt", "/..%5csecret.txt", "/%00"]) {
      const res = await rawGet(server.port, path);
      expect(res.status, path).toBe(404);
      expect(res.body, path).not.toContain("secret");
    }
    expect(decodePath("/a/../b")).toBeUndefined();
    expect(decodePath("/%E0%A4%A")).toBeUndefined();
    expect(decodePath("/assets//x.js")).toBe("assets/x.js");
  });

  it("says how to build the dashboard when its folder is empty", async () => {
    const empty = await serveConnect(() => {}, 0, "127.0.0.1", { plain: [dashboardFiles(join(dir, "nowhere"))] });
    try {
      const res = await fetch(`http://127.0.0.1:${empty.port}/`);
      expect(res.status).toBe(404);
      expect(await res.text()).toContain("npm run build");
    } finally {
      await empty.close();
    }
  });
});
