// The packages as a user gets them: `npm pack` of every package a user
// installs, and an app outside this repository that installs the tarballs
// (no workspace links, none of the repo's node_modules), type-checks against
// @stepwise/sdk with strict, runs `npx stepwise dev` and a function on it.
// `npm test` builds first, so every dist/ exists when this runs.
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Stack } from "./support/stack.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const run = promisify(execFile);

/** Every package a user installs, by workspace folder. */
const PACKAGES: Record<string, string> = {
  proto: "@stepwise/proto",
  "services/core": "@stepwise/core",
  "services/ingest": "@stepwise/ingest",
  "services/scheduler": "@stepwise/scheduler",
  "services/executor": "@stepwise/executor",
  "services/cli": "@stepwise/cli",
  "sdk-ts": "@stepwise/sdk",
};

/** What a package may hold: its manifest, README and LICENSE, built JavaScript with types and maps; the contract also its .proto files. */
const ALLOWED = [/^package\.json$/, /^README\.md$/, /^LICENSE$/, /^dist\/.+\.(js|d\.ts|js\.map)$/];
const ALLOWED_PROTO = [...ALLOWED, /^stepwise\/v1\/[a-z_]+\.proto$/];
/** Ingest also holds the dashboard's built files, which it serves at /. */
const ALLOWED_INGEST = [...ALLOWED, /^dist\/dashboard\/index\.html$/, /^dist\/dashboard\/assets\/[\w-]+\.(js|css)$/];

interface Pack {
  name: string;
  version: string;
  filename: string;
  files: Array<{ path: string }>;
}

async function pack(args: string[]): Promise<Pack[]> {
  const workspaces = Object.keys(PACKAGES).flatMap((w) => ["--workspace", w]);
  const { stdout } = await run("npm", ["pack", "--json", "--ignore-scripts", ...args, ...workspaces], {
    cwd: ROOT,
    maxBuffer: 64 * 1024 * 1024,
  });
  return JSON.parse(stdout) as Pack[];
}

describe("npm pack of every package", () => {
  let packs: Pack[];
  beforeAll(async () => {
    packs = await pack(["--dry-run"]);
  });

  it("packs each package a user installs, all at one version", () => {
    expect(packs.map((p) => p.name).sort()).toEqual(Object.values(PACKAGES).sort());
    expect(new Set(packs.map((p) => p.version)).size).toBe(1);
  });

  it("holds only what the allowlist names: built code, README, LICENSE, and no test, test helper or source", () => {
    for (const p of packs) {
      const files = p.files.map((f) => f.path);
      const allowed = p.name === "@stepwise/proto" ? ALLOWED_PROTO : p.name === "@stepwise/ingest" ? ALLOWED_INGEST : ALLOWED;
      expect(files.filter((f) => !allowed.some((a) => a.test(f))), p.name).toEqual([]);
      expect(files.filter((f) => /\.test\.|harness|(^|\/)testing\//i.test(f)), p.name).toEqual([]);
      for (const needed of ["package.json", "README.md", "LICENSE", "dist/index.js", "dist/index.d.ts"]) {
        expect(files, `${p.name} lacks ${needed}`).toContain(needed);
      }
    }
    const cli = packs.find((p) => p.name === "@stepwise/cli")!;
    expect(cli.files.map((f) => f.path)).toContain("dist/main.js");
    const proto = packs.find((p) => p.name === "@stepwise/proto")!;
    expect(proto.files.map((f) => f.path)).toContain("stepwise/v1/worker.proto");
    const ingest = packs.find((p) => p.name === "@stepwise/ingest")!;
    expect(ingest.files.map((f) => f.path)).toContain("dist/dashboard/index.html");
  });
});

describe("one version for the set", () => {
  it("the SDK reports the version of its package", async () => {
    const manifest = JSON.parse(await readFile(join(ROOT, "sdk-ts", "package.json"), "utf8")) as { version: string };
    expect(await readFile(join(ROOT, "sdk-ts", "src", "version.ts"), "utf8")).toContain(`SDK_VERSION = "${manifest.version}"`);
  });

  it("npm run set-version moves every package, their dependencies on each other and the lockfile together", async () => {
    // On a copy of the manifests, the lockfile and the script, not on the checkout.
    const copy = await mkdtemp(join(tmpdir(), "stepwise-version-"));
    try {
      const root = JSON.parse(await readFile(join(ROOT, "package.json"), "utf8")) as { workspaces: string[] };
      for (const file of ["package.json", "package-lock.json", "deploy/set-version.mjs", "sdk-ts/src/version.ts", ...root.workspaces.map((w) => `${w}/package.json`)]) {
        await mkdir(join(copy, file, ".."), { recursive: true });
        await copyFile(join(ROOT, file), join(copy, file));
      }
      await run("node", ["deploy/set-version.mjs", "7.8.9-rc.1"], { cwd: copy, maxBuffer: 16 * 1024 * 1024 });
      const lock = JSON.parse(await readFile(join(copy, "package-lock.json"), "utf8")) as {
        packages: Record<string, { version?: string; dependencies?: Record<string, string> }>;
      };
      for (const [dir, name] of Object.entries(PACKAGES)) {
        const manifest = JSON.parse(await readFile(join(copy, dir, "package.json"), "utf8")) as {
          version: string;
          dependencies?: Record<string, string>;
        };
        expect(manifest.version, name).toBe("7.8.9-rc.1");
        expect(lock.packages[dir]?.version, name).toBe("7.8.9-rc.1");
        for (const [dep, range] of Object.entries(manifest.dependencies ?? {})) {
          if (dep.startsWith("@stepwise/")) expect(range, `${name} -> ${dep}`).toBe("7.8.9-rc.1");
        }
      }
      expect(await readFile(join(copy, "sdk-ts", "src", "version.ts"), "utf8")).toContain('SDK_VERSION = "7.8.9-rc.1"');
      const bad = await run("node", ["deploy/set-version.mjs", "next"], { cwd: copy }).then(
        () => undefined,
        (err: { code?: number; stderr?: string }) => err,
      );
      expect(bad?.code).toBe(2);
      expect(bad?.stderr).toMatch(/usage: npm run set-version/);
    } finally {
      await rm(copy, { recursive: true, force: true });
    }
  }, 120_000);
});

describe("an app outside the repository that installs the packed packages", () => {
  let dir: string;
  let engine: ChildProcess | undefined;
  const port = 20_000 + Math.floor(Math.random() * 20_000);

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "stepwise-app-"));
    await mkdir(join(dir, "packages"));
    await mkdir(join(dir, "app", "src"), { recursive: true });
    await pack(["--pack-destination", join(dir, "packages")]);
  }, 120_000);

  afterAll(async () => {
    stopEngine(engine, "SIGKILL");
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("installs without engine warnings, type-checks with strict, and runs a function on npx stepwise dev and on stepwise start of each service", async () => {
    const app = join(dir, "app");
    const tarballs = (await readdir(join(dir, "packages"))).filter((f) => f.endsWith(".tgz"));
    expect(tarballs).toHaveLength(Object.keys(PACKAGES).length);
    const devVersions = JSON.parse((await run("npm", ["pkg", "get", "devDependencies", "--json"], { cwd: ROOT })).stdout) as Record<
      string,
      string
    >;
    await writeFile(join(app, "package.json"), JSON.stringify({ name: "shop", private: true, type: "module" }, null, 2));
    const install = await run(
      "npm",
      [
        "install",
        "--no-audit",
        "--no-fund",
        "--prefer-offline",
        ...tarballs.map((t) => join(dir, "packages", t)),
        `zod@${devVersions["zod"]}`,
        `typescript@${devVersions["typescript"]}`,
        `@types/node@${devVersions["@types/node"]}`,
      ],
      { cwd: app, maxBuffer: 64 * 1024 * 1024 },
    );
    expect(`${install.stdout}${install.stderr}`).not.toMatch(/EBADENGINE/);

    await writeFile(
      join(app, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: {
          target: "ES2022",
          module: "NodeNext",
          moduleResolution: "NodeNext",
          strict: true,
          noUncheckedIndexedAccess: true,
          exactOptionalPropertyTypes: true,
          verbatimModuleSyntax: true,
          types: ["node"],
          outDir: "dist",
        },
        include: ["src"],
      }),
    );
    await writeFile(join(app, "src", "main.ts"), APP);
    await run(join(app, "node_modules", ".bin", "tsc"), ["-p", "."], { cwd: app });

    // A process group of its own: npx does not pass a signal on to the engine it started.
    engine = spawn("npx", ["--no", "stepwise", "dev", "--memory", "--port", String(port)], {
      cwd: app,
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, LOG_LEVEL: "warn" },
    });
    await new Promise<void>((resolve, reject) => {
      let out = "";
      const timer = setTimeout(() => reject(new Error(`stepwise dev did not start: ${out}`)), 60_000);
      engine!.stdout!.on("data", (d: Buffer) => {
        out += d.toString();
        if (out.includes("listening on")) {
          clearTimeout(timer);
          resolve();
        }
      });
      engine!.stderr!.on("data", (d: Buffer) => (out += d.toString()));
      engine!.on("exit", (code) => reject(new Error(`stepwise dev exited with ${code}: ${out}`)));
    });

    await expectRunCompletes(app, `http://127.0.0.1:${port}`);
    // The dashboard, from the copy in the installed @stepwise/ingest.
    const dashboard = await fetch(`http://127.0.0.1:${port}/runs`);
    expect(dashboard.status).toBe(200);
    expect(await dashboard.text()).toContain('<div id="app"></div>');
    const exited = new Promise((resolve) => engine!.once("exit", resolve));
    stopEngine(engine, "SIGTERM");
    await exited;

    // The same app on the three services as separate processes, from the
    // installed `stepwise` command: migrate, start ingest|scheduler|executor.
    const stack = new Stack({}, { cli: join(app, "node_modules", ".bin", "stepwise") });
    try {
      await stack.start();
      const [migrated] = await stack.query<{ n: number }>("SELECT count(*)::int AS n FROM schema_migrations");
      expect(migrated?.n).toBeGreaterThan(0);
      await expectRunCompletes(app, stack.ingestUrl, stack.executorUrl);
    } finally {
      await stack.stop();
    }
  }, 240_000);
});

/** Signals the process group of `stepwise dev` (npx and the engine under it), if it still runs. */
function stopEngine(engine: ChildProcess | undefined, signal: NodeJS.Signals): void {
  if (!engine?.pid || engine.exitCode !== null || engine.signalCode !== null) return;
  try {
    process.kill(-engine.pid, signal);
  } catch {
    // Gone already.
  }
}

/** Runs the app's function once against an engine and checks how its run ended. */
async function expectRunCompletes(app: string, url: string, workerUrl = url): Promise<void> {
  const { stdout } = await run("node", ["dist/main.js", url, workerUrl], { cwd: app, timeout: 60_000 });
  const result = JSON.parse(stdout.trim().split("\n").at(-1)!) as { status: string; output: unknown; steps: string[]; charged: number };
  expect(result.status).toBe("COMPLETED");
  expect(result.output).toEqual({ paymentId: "pay_o-1", trackingNumber: "TRK-1" });
  expect(result.steps).toEqual(["charge:0", "wait-for-shipment:0", "cool-down:0"]);
  expect(result.charged).toBe(1);
}

/** The app: a function of step.run, step.waitForEvent and step.sleep; prints how its run ended as JSON. */
const APP = `import { Stepwise, Worker, type RunInfo } from "@stepwise/sdk";
import { z } from "zod";

const url = process.argv[2] ?? "http://127.0.0.1:8288";
const workerUrl = process.argv[3] ?? url;
const stepwise = new Stepwise({
  appId: "shop",
  url,
  schemas: {
    "order.placed": z.object({ orderId: z.string() }),
    "shipment.created": z.object({ orderId: z.string(), trackingNumber: z.string() }),
  },
});

let charged = 0;
const orders = stepwise.createFunction(
  { id: "order-processing", triggers: [{ event: "order.placed" }] },
  async ({ event, step }) => {
    const payment = await step.run("charge", () => {
      charged++;
      return { id: \`pay_\${event.data.orderId}\` };
    });
    const shipment = await step.waitForEvent("wait-for-shipment", {
      event: "shipment.created",
      timeout: "1m",
      match: "data.orderId",
    });
    await step.sleep("cool-down", "500ms");
    return { paymentId: payment.id, trackingNumber: shipment?.data.trackingNumber ?? null };
  },
);

const worker = new Worker({ url: workerUrl, functions: [orders], handleSignals: false });
await worker.connect();
const [eventId] = await stepwise.send({ name: "order.placed", data: { orderId: "o-1" } });
let run: RunInfo | undefined;
for (let i = 0; i < 200 && run?.status !== "WAITING"; i++) {
  await new Promise((r) => setTimeout(r, 50));
  run = (await stepwise.listRunsOfEvent(eventId!))[0];
}
await stepwise.send({ name: "shipment.created", data: { orderId: "o-1", trackingNumber: "TRK-1" } });
const { runs } = await stepwise.waitForRuns(eventId!, { timeoutMs: 30_000 });
const ended = await stepwise.getRun(runs[0]!.id);
console.log(JSON.stringify({ status: ended.status, output: ended.output, steps: ended.steps.map((s) => s.key), charged }));
await worker.close();
stepwise.close();
`;
