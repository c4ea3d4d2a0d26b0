import { median } from "./percentiles.js";
import { machineCpu, pidsByName, resetPeakRss, sampleProcess } from "./process-usage.js";

/** CPU and memory one process used over a window. */
export interface ProcessUsage {
  /** utime + stime spent in the window, in seconds. */
  cpuSeconds: number;
  /** Peak resident set in the window (VmHWM after a reset at its start), in MiB. */
  peakRssMiB: number;
}

/** What a window of measurement cost, per process and for the machine. */
export interface WindowUsage {
  wallSeconds: number;
  /** The benchmark's own processes: the services, the worker, the client. */
  processes: Record<string, ProcessUsage>;
  /**
   * CPU seconds of servers shared with whatever else runs on the machine
   * (all Postgres processes, the NATS server): context, not attributable to
   * the benchmark alone.
   */
  shared: Record<string, number>;
  /** Average number of busy cores of the whole machine; above the benchmark's own share means other load. */
  machineBusyCores: number;
  /** False when the kernel refused to reset VmHWM: peaks are then since process start. */
  peaksAreWindowed: boolean;
}

const SHARED_SERVERS: Record<string, readonly string[]> = {
  postgres: ["postgres"],
  nats: ["nats-server"],
};

const MiB = 1024 * 1024;

/**
 * Measures a window: CPU time (utime+stime deltas) and peak resident set
 * (VmHWM, reset at the start) of named processes, plus the CPU of the shared
 * servers and of the whole machine.
 *
 * @example
 * ```ts
 * const window = UsageWindow.start(new Map([["executor", pid]]));
 * await runWorkload();
 * const usage = window.finish();
 * ```
 */
export class UsageWindow {
  private constructor(
    private readonly pids: ReadonlyMap<string, number>,
    private readonly startedAt: number,
    private readonly cpuAtStart: ReadonlyMap<string, number>,
    private readonly sharedAtStart: ReadonlyMap<number, number>,
    private readonly machineAtStart: number,
    private readonly peaksAreWindowed: boolean,
  ) {}

  /** Starts a window over the processes named in pids. */
  static start(pids: ReadonlyMap<string, number>): UsageWindow {
    let windowed = true;
    const cpu = new Map<string, number>();
    for (const [name, pid] of pids) {
      windowed = resetPeakRss(pid) && windowed;
      cpu.set(name, sampleProcess(pid)?.cpuSeconds ?? 0);
    }
    const shared = new Map<number, number>();
    for (const pid of pidsByName(Object.values(SHARED_SERVERS).flat())) shared.set(pid, sampleProcess(pid)?.cpuSeconds ?? 0);
    return new UsageWindow(pids, performance.now(), cpu, shared, machineCpu().busySeconds, windowed);
  }

  /** Ends the window and reports what it used. */
  finish(): WindowUsage {
    const wallSeconds = (performance.now() - this.startedAt) / 1000;
    const processes: Record<string, ProcessUsage> = {};
    for (const [name, pid] of this.pids) {
      const now = sampleProcess(pid);
      processes[name] = {
        cpuSeconds: (now?.cpuSeconds ?? Number.NaN) - (this.cpuAtStart.get(name) ?? 0),
        peakRssMiB: (now?.peakRssBytes ?? Number.NaN) / MiB,
      };
    }
    const shared: Record<string, number> = {};
    for (const [group, names] of Object.entries(SHARED_SERVERS)) {
      let seconds = 0;
      for (const pid of pidsByName(names)) {
        // A process that started within the window spent all its CPU in it.
        seconds += (sampleProcess(pid)?.cpuSeconds ?? 0) - (this.sharedAtStart.get(pid) ?? 0);
      }
      shared[group] = seconds;
    }
    return {
      wallSeconds,
      processes,
      shared,
      machineBusyCores: (machineCpu().busySeconds - this.machineAtStart) / wallSeconds,
      peaksAreWindowed: this.peaksAreWindowed,
    };
  }
}

/** The median CPU seconds and peak RSS of each process over repeated windows. */
export function medianUsage(rows: readonly Record<string, ProcessUsage>[]): Record<string, ProcessUsage> {
  const names = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  return Object.fromEntries(
    names.map((n) => [
      n,
      {
        cpuSeconds: median(rows.map((r) => r[n]?.cpuSeconds ?? Number.NaN)),
        peakRssMiB: median(rows.map((r) => r[n]?.peakRssMiB ?? Number.NaN)),
      },
    ]),
  );
}
