import { readdirSync, readFileSync, writeFileSync } from "node:fs";

/** Clock ticks per second of /proc/<pid>/stat times (USER_HZ; 100 on Linux). */
const TICKS_PER_SECOND = 100;

/** What /proc says of one process at one moment. */
export interface ProcessSample {
  /** utime + stime, in seconds. */
  cpuSeconds: number;
  /** Resident set now (VmRSS), in bytes. */
  rssBytes: number;
  /** Peak resident set (VmHWM) since start or since the last resetPeakRss, in bytes. */
  peakRssBytes: number;
}

/** Reads the CPU time and resident set of a process; undefined once it is gone. */
export function sampleProcess(pid: number): ProcessSample | undefined {
  try {
    return {
      cpuSeconds: cpuSeconds(readFileSync(`/proc/${pid}/stat`, "utf8")),
      ...memory(readFileSync(`/proc/${pid}/status`, "utf8")),
    };
  } catch {
    return undefined;
  }
}

/**
 * Resets a process's peak resident set (VmHWM) to its current one, so a
 * later sample reports the peak of a window only. Returns false where the
 * kernel refuses (not the owner, or no /proc/<pid>/clear_refs).
 */
export function resetPeakRss(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, "5");
    return true;
  } catch {
    return false;
  }
}

/** Pids of the processes whose command name (/proc/<pid>/comm) is one of names. */
export function pidsByName(names: readonly string[]): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (names.includes(readFileSync(`/proc/${entry}/comm`, "utf8").trim())) pids.push(Number(entry));
    } catch {
      // Gone between the listing and the read.
    }
  }
  return pids;
}

/** CPU time of the whole machine: busy and total seconds summed over cores, from /proc/stat. */
export function machineCpu(): { busySeconds: number; totalSeconds: number } {
  const line = readFileSync("/proc/stat", "utf8").split("\n")[0]!;
  const ticks = line.trim().split(/\s+/).slice(1).map(Number);
  const total = ticks.reduce((a, b) => a + b, 0);
  // idle and iowait are the 4th and 5th fields.
  const idle = (ticks[3] ?? 0) + (ticks[4] ?? 0);
  return { busySeconds: (total - idle) / TICKS_PER_SECOND, totalSeconds: total / TICKS_PER_SECOND };
}

function cpuSeconds(stat: string): number {
  // The command name (field 2) may hold spaces and parentheses: fields are counted after its last ")".
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // utime and stime are fields 14 and 15 of the line, 12th and 13th after the name.
  return (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND;
}

function memory(status: string): { rssBytes: number; peakRssBytes: number } {
  const kib = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? 0) * 1024;
  return { rssBytes: kib("VmRSS"), peakRssBytes: kib("VmHWM") };
}
