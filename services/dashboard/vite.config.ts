import preact from "@preact/preset-vite";
import { defineConfig } from "vite";

// The dashboard's bundle: static files in dist/, which ingest serves at /
// (services/ingest/src/dashboard-files.ts). `npm run build` at the root
// runs this after tsc has type-checked src/ (tsconfig.json).
export default defineConfig({
  root: import.meta.dirname,
  plugins: [preact({ devToolsInProd: false, prefreshEnabled: false })],
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2022",
    reportCompressedSize: false,
  },
  // `npx vite services/dashboard` serves the sources with the RPCs of a
  // local `stepwise dev` (port 8288).
  server: {
    proxy: { "/stepwise.v1.": process.env["STEPWISE_URL"] ?? "http://127.0.0.1:8288" },
  },
});
