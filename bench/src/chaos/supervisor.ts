// Watches every process the suite started for an exit nobody asked for: a
// service, worker, NATS node or Postgres that died on its own (a crash of
// the engine, not a fault the suite injected). Each is recorded, with the
// end of its output, and the process is started again a second later, as
// a process manager would, so that the run goes on; a crash fails the run.
import type { ChildProcess } from "node:child_process";
import { setTimeout as sleep } from "node:timers/promises";

/** A process that exited on its own. */
export interface CrashRecord {
  process: string;
  pid: number;
  /** When it exited (ms since the epoch). */
  at: number;
  exit: string;
  /** The end of its output: the error it died of, usually. */
  tail: string;
  restartedAt: number | undefined;
}

export class Supervisor {
  readonly crashes: CrashRecord[] = [];
  private readonly expected = new Set<number>();
  private stopping = false;

  constructor(private readonly log: (line: string) => void) {}

  /** The suite is about to end this process itself. */
  expect(pid: number | undefined): void {
    if (pid !== undefined) this.expected.add(pid);
  }

  /** Everything is being stopped: no exit is a crash any more. */
  stop(): void {
    this.stopping = true;
  }

  /** Watches a process that has started; restart() brings it back if it dies on its own. */
  watch(name: string, child: ChildProcess, tail: () => string, restart: () => Promise<void>): void {
    child.once("exit", (code, signal) => {
      const pid = child.pid;
      if (this.stopping || pid === undefined || this.expected.has(pid)) return;
      const record: CrashRecord = { process: name, pid, at: Date.now(), exit: signal ?? `exit code ${code}`, tail: tail().slice(-4000), restartedAt: undefined };
      this.crashes.push(record);
      this.log(`CRASH: ${name} (pid ${pid}) exited on its own (${record.exit}); starting it again`);
      void (async () => {
        for (let i = 0; i < 10 && !this.stopping; i++) {
          await sleep(1_000);
          try {
            await restart();
            record.restartedAt = Date.now();
            return;
          } catch (err) {
            this.log(`${name}: restart after its crash failed: ${String((err as Error).message ?? err).split("\n")[0]}`);
          }
        }
      })();
    });
  }
}
