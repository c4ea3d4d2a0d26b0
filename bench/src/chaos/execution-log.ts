// The execution log of a worker process: one line per step body start
// (B) and finish (E), written with a synchronous write(2) on a file opened
// for appending, so every line a body got past is in the file even when
// the process is SIGKILLed right after.
//
//   B <run id> <step key> <pid> <wall ms> <nonce>
//   E <run id> <step key> <pid> <wall ms> <nonce>
import { closeSync, openSync, readdirSync, readFileSync, writeSync } from "node:fs";
import { join } from "node:path";

/** Writes the log of this process. */
export class ExecutionLog {
  private readonly fd: number;
  private seq = 0;

  constructor(file: string) {
    this.fd = openSync(file, "a");
  }

  /** Records a body's start; returns the nonce of this execution. */
  begin(runId: string, stepKey: string): string {
    const nonce = `${process.pid}.${++this.seq}`;
    this.write("B", runId, stepKey, nonce);
    return nonce;
  }

  /** Records a body's finish. */
  end(runId: string, stepKey: string, nonce: string): void {
    this.write("E", runId, stepKey, nonce);
  }

  close(): void {
    closeSync(this.fd);
  }

  private write(tag: string, runId: string, stepKey: string, nonce: string): void {
    writeSync(this.fd, `${tag} ${runId} ${stepKey} ${process.pid} ${Date.now()} ${nonce}\n`);
  }
}

/** One execution of a step body, as the logs tell it. */
export interface BodyExecution {
  runId: string;
  stepKey: string;
  pid: number;
  nonce: string;
  /** Wall clock, ms since the epoch. */
  startedAt: number;
  /** Undefined: the log has no finish (the process died in the body). */
  finishedAt: number | undefined;
  /** The log file it is in. */
  file: string;
}

/** File name of a worker process's execution log. */
export function executionLogFile(dir: string, worker: string, incarnation: number): string {
  return join(dir, `exec-${worker}.${incarnation}.log`);
}

/** Reads every execution log in dir. A torn last line (a write cut by a kill) is skipped and counted. */
export function readExecutionLogs(dir: string): { executions: BodyExecution[]; files: number; badLines: number } {
  const files = readdirSync(dir).filter((f) => f.startsWith("exec-") && f.endsWith(".log"));
  const byNonce = new Map<string, BodyExecution>();
  let badLines = 0;
  for (const f of files) {
    const file = join(dir, f);
    for (const line of readFileSync(file, "utf8").split("\n")) {
      if (line === "") continue;
      const [tag, runId, stepKey, pid, at, nonce, ...rest] = line.split(" ");
      if ((tag !== "B" && tag !== "E") || !runId || !stepKey || !nonce || rest.length > 0 || !Number.isFinite(Number(at))) {
        badLines++;
        continue;
      }
      if (tag === "B") {
        byNonce.set(nonce, { runId, stepKey, pid: Number(pid), nonce, startedAt: Number(at), finishedAt: undefined, file: f });
      } else {
        const e = byNonce.get(nonce);
        if (e) e.finishedAt = Number(at);
        else badLines++;
      }
    }
  }
  return { executions: [...byNonce.values()], files: files.length, badLines };
}
