// What `npm publish` would ship of @stepwise/sdk: the built SDK, and none of
// its tests or test helpers. Nothing is packed; `npm pack --dry-run` lists
// the files from sdk-ts/dist, which `npm test` builds first.
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

/** The paths npm would put in the package, relative to sdk-ts/. */
async function packedFiles(): Promise<string[]> {
  const { stdout } = await promisify(execFile)("npm", ["pack", "--dry-run", "--json", "--ignore-scripts", "--workspace", "sdk-ts"], {
    cwd: ROOT,
    maxBuffer: 16 * 1024 * 1024,
  });
  const packs = JSON.parse(stdout) as Array<{ name: string; files: Array<{ path: string }> }>;
  expect(packs.map((p) => p.name)).toEqual(["@stepwise/sdk"]);
  return packs[0]!.files.map((f) => f.path);
}

describe("the @stepwise/sdk package", () => {
  it("holds the built SDK and no test file, test helper or testing folder", async () => {
    const files = await packedFiles();
    expect(files.length).toBeGreaterThan(0);
    expect(files).toContain("dist/index.js");
    expect(files).toContain("dist/index.d.ts");
    expect(files).toContain("package.json");
    expect(files.filter((f) => f.includes(".test."))).toEqual([]);
    expect(files.filter((f) => /harness/i.test(f))).toEqual([]);
    expect(files.filter((f) => /(^|\/)testing\//.test(f))).toEqual([]);
  });
});
