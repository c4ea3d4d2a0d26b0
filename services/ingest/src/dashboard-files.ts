import { createReadStream, existsSync, statSync, type Stats } from "node:fs";
import type * as http from "node:http";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import type { PlainHandler } from "@stepwise/core";

// The dashboard's static files (services/dashboard, built by `npm run
// build` into its dist/), served by ingest beside the Connect routes. The
// dashboard is a single-page app: / and its client routes answer
// index.html, which routes in the browser; the files Vite names by content
// hash are cached for good.

/**
 * Where the built dashboard is, seen from this file once compiled
 * (services/ingest/dist): in this repository, Vite's output in
 * services/dashboard/dist; in the @stepwise/ingest package a user
 * installs, the copy the build puts in its dist/dashboard.
 */
export const DASHBOARD_DIR = [new URL("../../dashboard/dist/", import.meta.url), new URL("./dashboard/", import.meta.url)]
  .map((u) => fileURLToPath(u))
  .find((dir) => existsSync(`${dir}index.html`)) ?? fileURLToPath(new URL("./dashboard/", import.meta.url));

/** The first path segments the dashboard routes in the browser: each answers index.html. */
const CLIENT_ROUTES = new Set(["runs", "functions", "events", "workers"]);

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
  ".map": "application/json",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".woff2": "font/woff2",
  ".txt": "text/plain; charset=utf-8",
};

/** Vite's output under assets/ carries a content hash in its name: the same name never changes content. */
const IMMUTABLE = "public, max-age=31536000, immutable";

// The page loads only its own scripts and styles and talks only to this
// origin (the RPCs); no other site may frame it.
const CSP = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/**
 * A PlainHandler for serveConnect's `plain` option that serves the built
 * dashboard from `dir`: GET and HEAD of /, of the client routes (/runs,
 * /runs/<id>, /functions, /events, /workers) and of the files in `dir`. It
 * answers nothing else (other handlers and the 404 get it), refuses paths
 * that leave `dir`, and says how to build the dashboard when it is not.
 */
export function dashboardFiles(dir: string = DASHBOARD_DIR): PlainHandler {
  const root = path.resolve(dir);
  return (req, res, urlPath) => {
    if (req.method !== "GET" && req.method !== "HEAD") return false;
    const rel = decodePath(urlPath);
    if (rel === undefined) return false;
    const out = res as http.ServerResponse;
    const first = rel.split("/", 1)[0] ?? "";
    if (rel === "" || rel === "index.html" || CLIENT_ROUTES.has(first)) {
      const index = path.join(root, "index.html");
      const stat = fileStat(index);
      if (!stat) {
        out.writeHead(404, { "content-type": "text/plain; charset=utf-8" });
        out.end("The dashboard is not built: run `npm run build` (it builds services/dashboard).\n");
        return true;
      }
      send(req, out, index, stat, { "content-type": TYPES[".html"]!, "cache-control": "no-cache", "content-security-policy": CSP });
      return true;
    }
    const file = path.join(root, rel);
    // decodePath already refused "..", but the join is the last word.
    if (!file.startsWith(root + path.sep)) return false;
    const stat = fileStat(file);
    if (!stat) return false;
    send(req, out, file, stat, {
      "content-type": TYPES[path.extname(file).toLowerCase()] ?? "application/octet-stream",
      "cache-control": rel.startsWith("assets/") ? IMMUTABLE : "no-cache",
    });
    return true;
  };
}

/**
 * The request path as a path relative to the dashboard's folder, without
 * its leading slash; undefined for one that does not decode or that could
 * leave the folder (a ".." segment, a backslash, a NUL).
 */
export function decodePath(urlPath: string): string | undefined {
  let decoded: string;
  try {
    decoded = decodeURIComponent(urlPath);
  } catch {
    return undefined;
  }
  if (!decoded.startsWith("/") || decoded.includes("\0") || decoded.includes("\\")) return undefined;
  const segments = decoded.slice(1).split("/");
  if (segments.some((s) => s === ".." || s === ".")) return undefined;
  return segments.filter((s) => s !== "").join("/");
}

function fileStat(file: string): Stats | undefined {
  try {
    const stat = statSync(file);
    return stat.isFile() ? stat : undefined;
  } catch {
    return undefined;
  }
}

function send(req: { method?: string | undefined; headers: http.IncomingHttpHeaders }, res: http.ServerResponse, file: string, stat: Stats, headers: Record<string, string>): void {
  const etag = `"${stat.size.toString(36)}-${Math.floor(stat.mtimeMs).toString(36)}"`;
  const common = { ...headers, etag, "x-content-type-options": "nosniff" };
  if (req.headers["if-none-match"] === etag) {
    res.writeHead(304, common);
    res.end();
    return;
  }
  res.writeHead(200, { ...common, "content-length": String(stat.size) });
  if (req.method === "HEAD") {
    res.end();
    return;
  }
  const stream = createReadStream(file);
  stream.on("error", () => res.destroy());
  stream.pipe(res);
}
