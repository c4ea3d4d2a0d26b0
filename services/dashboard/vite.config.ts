import { cpSync, rmSync } from "node:fs";
import { fileURLToPath } from "node:url";
import preact from "@preact/preset-vite";
import { defineConfig, type Plugin } from "vite";

// The dashboard's bundle: static files in dist/, which ingest serves at /
// (services/ingest/src/dashboard-files.ts). `npm run build` at the root
// runs this after tsc has type-checked src/ (tsconfig.json).

/**
 * Copies the bundle into @stepwise/ingest's dist/dashboard too, so that the
 * ingest package a user installs (npm pack, the image) serves it: the
 * dashboard itself is not a package of its own.
 */
function copyIntoIngest(): Plugin {
  return {
    name: "stepwise-copy-into-ingest",
    apply: "build",
    closeBundle() {
      const target = new URL("../ingest/dist/dashboard/", import.meta.url);
      rmSync(target, { recursive: true, force: true });
      cpSync(new URL("./dist/", import.meta.url), target, { recursive: true });
    },
  };
}

export default defineConfig({
  root: fileURLToPath(new URL(".", import.meta.url)),
  plugins: [preact({ devToolsInProd: false, prefreshEnabled: false }), copyIntoIngest()],
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2022",
    reportCompressedSize: false,
  },
  // `npx vite services/dashboard` serves the sources with the RPCs of a
  // local `stepwise dev` (port 8288, or STEPWISE_URL).
  server: {
    proxy: { "/stepwise.v1.": process.env["STEPWISE_URL"] ?? "http://127.0.0.1:8288" },
  },
});
