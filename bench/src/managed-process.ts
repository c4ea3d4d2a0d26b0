import { spawn, type ChildProcess } from "node:child_process";
import { createWriteStream } from "node:fs";
import { join } from "node:path";

/** Options of a process the harness starts. */
export interface LaunchOptions {
  env: NodeJS.ProcessEnv;
  /** Folder the process's stdout and stderr go to, as <name>.log. */
  logDir: string;
  /** Open an IPC channel (for a forked benchmark process). */
  ipc?: boolean;
}

/**
 * A process the harness started: its output goes to a log file, the tail
 * is kept for error messages, and stop() ends it (SIGTERM, then SIGKILL).
 */
export class ManagedProcess {
  readonly logFile: string;
  private tailText = "";
  private readonly exited: Promise<void>;

  private constructor(
    readonly name: string,
    readonly child: ChildProcess,
    logDir: string,
  ) {
    this.logFile = join(logDir, `${name}.log`);
    const log = createWriteStream(this.logFile);
    const onData = (d: Buffer) => {
      log.write(d);
      this.tailText = (this.tailText + d.toString()).slice(-8192);
    };
    child.stdout?.on("data", onData);
    child.stderr?.on("data", onData);
    this.exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    void this.exited.then(() => log.end());
  }

  /** Starts `command <args>` as a process named `name`. */
  static start(name: string, command: string, args: readonly string[], options: LaunchOptions): ManagedProcess {
    const child = spawn(command, args, {
      env: options.env,
      stdio: ["ignore", "pipe", "pipe", ...(options.ipc ? (["ipc"] as const) : [])],
    });
    return new ManagedProcess(name, child, options.logDir);
  }

  /** Starts `node <args>` (this Node) as a process named `name`. */
  static node(name: string, args: readonly string[], options: LaunchOptions): ManagedProcess {
    return ManagedProcess.start(name, process.execPath, args, options);
  }

  /** Pid of the process. */
  get pid(): number {
    if (this.child.pid === undefined) throw new Error(`${this.name} has no pid: it did not start`);
    return this.child.pid;
  }

  /** Whether it is still running. */
  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** The last output of the process. */
  tail(): string {
    return this.tailText;
  }

  /** Resolves once the process printed text; rejects if it exits first or after timeoutMs. */
  waitForOutput(text: string, timeoutMs: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => finish(new Error(`${this.name} did not print ${text} within ${timeoutMs} ms:\n${this.tailText}`)), timeoutMs);
      const onData = () => {
        if (this.tailText.includes(text)) finish();
      };
      const onExit = () => finish(new Error(`${this.name} exited while starting:\n${this.tailText}`));
      const finish = (err?: Error) => {
        clearTimeout(timer);
        this.child.stdout?.off("data", onData);
        this.child.stderr?.off("data", onData);
        this.child.off("exit", onExit);
        if (err) reject(err);
        else resolve();
      };
      this.child.stdout?.on("data", onData);
      this.child.stderr?.on("data", onData);
      this.child.once("exit", onExit);
      onData();
    });
  }

  /** Waits for the process to exit by itself, up to timeoutMs; true if it did. */
  async waitForExit(timeoutMs: number): Promise<boolean> {
    if (!this.running) return true;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<false>((r) => (timer = setTimeout(() => r(false), timeoutMs)));
    const done = await Promise.race([this.exited.then(() => true), timedOut]);
    clearTimeout(timer);
    return done;
  }

  /** Sends SIGTERM, and SIGKILL if it is still running after graceMs. */
  async stop(graceMs = 10_000): Promise<void> {
    if (!this.running) return;
    this.child.kill("SIGTERM");
    if (await this.waitForExit(graceMs)) return;
    this.child.kill("SIGKILL");
    await this.exited;
  }
}
