// Servers a test or the chaos suite starts for itself on loopback ports
// (a NATS server, a three-node NATS cluster, a Postgres cluster in a
// temporary folder), so it can kill and restart them without touching the
// machine's own.
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readdirSync, readFileSync, rmSync } from "node:fs";

const NATS_SERVER = process.env["NATS_SERVER_BIN"] ?? "/usr/sbin/nats-server";

/** Free TCP port on loopback. */
export async function freePort(): Promise<number> {
  const net = await import("node:net");
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
    srv.on("error", reject);
  });
}

/** Resolves once a process printed `ready` (on stdout or stderr); rejects if it exits or times out first. */
export function waitForOutput(proc: ChildProcess, ready: string, what: string, timeoutMs: number, log: string[] = []): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} did not start:\n${log.join("")}`)), timeoutMs);
    let seen = "";
    const onData = (d: Buffer) => {
      const text = d.toString();
      log.push(text);
      // Only this process's output counts: log may hold an earlier run's.
      seen = (seen + text).slice(-4096);
      if (seen.includes(ready)) {
        clearTimeout(timer);
        resolve();
      }
    };
    proc.stdout!.on("data", onData);
    proc.stderr!.on("data", onData);
    proc.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited with ${code} while starting:\n${log.join("")}`));
    });
  });
}

/** Sends a signal and waits for the process to be gone; no-op if it already is. */
export async function killProcess(proc: ChildProcess | undefined, signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
  if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise<void>((r) => proc.once("exit", () => r()));
  proc.kill(signal);
  await exited;
}

/**
 * A NATS server of the test's own, with JetStream in a temporary folder, so
 * a test can kill and restart it without touching the machine's NATS.
 */
export class PrivateNats {
  proc: ChildProcess | undefined;
  port = 0;
  readonly dir: string;

  constructor() {
    this.dir = `/tmp/stepwise-nats-${randomBytes(4).toString("hex")}`;
  }

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    if (this.port === 0) this.port = await freePort();
    const proc = spawn(NATS_SERVER, ["-a", "127.0.0.1", "-p", String(this.port), "-js", "-sd", this.dir], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.proc = proc;
    await waitForOutput(proc, "Server is ready", "nats-server", 10_000);
  }

  async kill(): Promise<void> {
    await killProcess(this.proc);
  }

  async stop(): Promise<void> {
    await this.kill();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** One node of a NatsCluster. */
export class NatsNode {
  proc: ChildProcess | undefined;
  readonly log: string[] = [];

  constructor(
    readonly name: string,
    readonly port: number,
    readonly clusterPort: number,
    readonly dir: string,
    private readonly routes: readonly number[],
    private readonly clusterName: string,
  ) {}

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  get running(): boolean {
    return this.proc !== undefined && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  async start(): Promise<void> {
    const proc = spawn(
      NATS_SERVER,
      [
        "-a", "127.0.0.1", "-p", String(this.port), "-js", "-sd", this.dir,
        "--server_name", this.name, "--cluster_name", this.clusterName,
        "--cluster", `nats://127.0.0.1:${this.clusterPort}`,
        "--routes", this.routes.map((p) => `nats://127.0.0.1:${p}`).join(","),
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    this.proc = proc;
    this.log.length = 0;
    await waitForOutput(proc, "Server is ready", `nats-server ${this.name}`, 15_000, this.log);
  }

  /** kill -9, as a crash would. */
  async kill(): Promise<void> {
    await killProcess(this.proc);
  }

  /** Deletes the node's JetStream store (the node must be down): its disk is lost. */
  wipeStore(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * A three-node (or n-node) NATS cluster with JetStream on loopback ports,
 * each node with its own store in a temporary folder.
 */
export class NatsCluster {
  readonly nodes: NatsNode[] = [];
  private readonly root = `/tmp/stepwise-nats-cluster-${randomBytes(4).toString("hex")}`;

  private constructor() {}

  static async start(size = 3): Promise<NatsCluster> {
    const cluster = new NatsCluster();
    const ports: Array<{ port: number; clusterPort: number }> = [];
    for (let i = 0; i < size; i++) ports.push({ port: await freePort(), clusterPort: await freePort() });
    const name = `c${randomBytes(3).toString("hex")}`;
    for (let i = 0; i < size; i++) {
      const routes = ports.filter((_, j) => j !== i).map((p) => p.clusterPort);
      cluster.nodes.push(new NatsNode(`n${i + 1}`, ports[i]!.port, ports[i]!.clusterPort, `${cluster.root}/n${i + 1}`, routes, name));
    }
    await Promise.all(cluster.nodes.map((n) => n.start()));
    await cluster.waitForJetStream();
    return cluster;
  }

  /** Every node's client URL, comma separated, as NATS_URL takes them. */
  get url(): string {
    return this.nodes.map((n) => n.url).join(",");
  }

  node(name: string): NatsNode {
    const n = this.nodes.find((x) => x.name === name);
    if (!n) throw new Error(`no node ${name} in the cluster`);
    return n;
  }

  /**
   * Waits until JetStream has a meta leader (the cluster can create
   * streams): a fresh cluster elects one a few seconds after its routes
   * are up.
   */
  async waitForJetStream(timeoutMs = 30_000): Promise<void> {
    const { connect } = await import("@nats-io/transport-node");
    const { jetstreamManager } = await import("@nats-io/jetstream");
    const deadline = Date.now() + timeoutMs;
    const nc = await connect({ servers: this.nodes.filter((n) => n.running).map((n) => n.url) });
    try {
      for (;;) {
        try {
          const jsm = await jetstreamManager(nc, { timeout: 2_000 });
          await jsm.getAccountInfo();
          return;
        } catch (err) {
          if (Date.now() > deadline) throw new Error(`the NATS cluster has no JetStream leader: ${String(err)}`);
          await new Promise((r) => setTimeout(r, 250));
        }
      }
    } finally {
      await nc.close();
    }
  }

  async stop(): Promise<void> {
    await Promise.all(this.nodes.map((n) => n.kill()));
    rmSync(this.root, { recursive: true, force: true });
  }
}

/**
 * A Postgres server of the test's own (initdb into a temporary folder, run
 * as the postgres user), so a test can kill -9 and restart it without
 * touching the machine's Postgres.
 */
export class PrivatePostgres {
  proc: ChildProcess | undefined;
  port = 0;
  readonly dir = `/tmp/stepwise-pg-${randomBytes(4).toString("hex")}`;
  private readonly bin: string;

  constructor() {
    const version = readdirSync("/usr/lib/postgresql").sort().pop();
    this.bin = `/usr/lib/postgresql/${version}/bin`;
  }

  get url(): string {
    return `postgres://postgres@127.0.0.1:${this.port}/postgres`;
  }

  /** Runs a Postgres binary as the postgres user (Postgres refuses root), as a direct child so it is reaped. */
  private asPostgres(args: string[]): ChildProcess {
    const [cmd, ...rest] = args;
    const ids = process.getuid?.() === 0 ? postgresIds() : {};
    return spawn(cmd!, rest, { stdio: ["ignore", "pipe", "pipe"], ...ids });
  }

  async init(): Promise<void> {
    const { mkdirSync, chownSync } = await import("node:fs");
    mkdirSync(this.dir, { recursive: true });
    if (process.getuid?.() === 0) {
      const { uid, gid } = postgresIds();
      chownSync(this.dir, uid, gid);
    }
    await new Promise<void>((resolve, reject) => {
      const p = this.asPostgres([`${this.bin}/initdb`, "-D", this.dir, "-A", "trust", "-U", "postgres", "--no-sync"]);
      let out = "";
      p.stdout!.on("data", (d: Buffer) => (out += d.toString()));
      p.stderr!.on("data", (d: Buffer) => (out += d.toString()));
      p.once("exit", (code) => (code === 0 ? resolve() : reject(new Error(`initdb failed: ${out}`))));
    });
    this.port = await freePort();
  }

  async start(): Promise<void> {
    const proc = this.asPostgres([
      `${this.bin}/postgres`, "-D", this.dir, "-p", String(this.port), "-k", this.dir,
      "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=100",
    ]);
    this.proc = proc;
    await waitForOutput(proc, "ready to accept connections", "postgres", 20_000);
  }

  /** kill -9 of the postmaster, as a crash would; its backends exit on their own. */
  async kill(): Promise<void> {
    await killProcess(this.proc);
  }

  async stop(): Promise<void> {
    await this.kill();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

function postgresIds(): { uid: number; gid: number } {
  const line = readFileSync("/etc/passwd", "utf8")
    .split("\n")
    .find((l) => l.startsWith("postgres:"));
  if (!line) throw new Error("no postgres user on this machine");
  const [, , uid, gid] = line.split(":");
  return { uid: Number(uid), gid: Number(gid) };
}

