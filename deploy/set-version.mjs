#!/usr/bin/env node
// Sets one version on every package a user installs, and on their
// dependencies on each other, then updates package-lock.json:
//   npm run set-version -- 0.2.0
// The packages move together: a release is the whole set at one version
// (docs/operations.md, "Cutting a release").
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** The published packages, in the order they are published: each after what it depends on. */
const PACKAGES = ["proto", "services/core", "services/ingest", "services/scheduler", "services/executor", "services/cli", "sdk-ts"];

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const version = process.argv[2];
if (!version || !/^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$/.test(version)) {
  process.stderr.write("usage: npm run set-version -- <major.minor.patch[-prerelease]>\n");
  process.exit(2);
}

const manifests = PACKAGES.map((dir) => {
  const path = join(root, dir, "package.json");
  return { path, json: JSON.parse(readFileSync(path, "utf8")) };
});
const names = new Set(manifests.map((m) => m.json.name));
// The example and the dashboard are not published, but depend on packages that are.
const unpublished = ["examples/order-processing", "services/dashboard"].map((dir) => ({ path: join(root, dir, "package.json"), json: null }));
for (const m of [...manifests, ...unpublished]) {
  const json = m.json ?? JSON.parse(readFileSync(m.path, "utf8"));
  if (m.json) json.version = version;
  for (const field of ["dependencies", "devDependencies", "peerDependencies"]) {
    for (const dep of Object.keys(json[field] ?? {})) if (names.has(dep)) json[field][dep] = version;
  }
  writeFileSync(m.path, `${JSON.stringify(json, null, 2)}\n`);
}
writeFileSync(
  join(root, "sdk-ts/src/version.ts"),
  readFileSync(join(root, "sdk-ts/src/version.ts"), "utf8").replace(/SDK_VERSION = "[^"]*"/, `SDK_VERSION = "${version}"`),
);
execFileSync("npm", ["install", "--package-lock-only", "--no-audit", "--no-fund", "--prefer-offline"], { cwd: root, stdio: "inherit" });
process.stdout.write(`every package is at ${version}\n`);
