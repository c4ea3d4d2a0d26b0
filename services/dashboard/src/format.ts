import { toJson, type JsonValue } from "@bufbuild/protobuf";
import { timestampDate, ValueSchema, type Timestamp, type Value } from "@bufbuild/protobuf/wkt";
import { RunStatus } from "@stepwise/proto";

// How the dashboard writes times, durations, statuses and JSON.

/** A Timestamp as a Date; undefined when unset. */
export function dateOf(ts: Timestamp | undefined): Date | undefined {
  return ts ? timestampDate(ts) : undefined;
}

/** A time as the local clock shows it, with the date when it is not today. */
export function formatTime(d: Date | undefined): string {
  if (!d) return "—";
  const now = new Date();
  const sameDay = d.toDateString() === now.toDateString();
  const time = d.toLocaleTimeString(undefined, { hour12: false, hour: "2-digit", minute: "2-digit", second: "2-digit" });
  return sameDay ? time : `${d.toLocaleDateString(undefined, { month: "short", day: "numeric" })} ${time}`;
}

/** A span of milliseconds, short: 850 ms, 3.2 s, 4 min 10 s, 2 h 5 min, 3 d 4 h. */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return "—";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
  const s = Math.round(ms / 1000);
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86_400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86_400)} d ${Math.floor((s % 86_400) / 3600)} h`;
}

/** How long ago a time was, short. */
export function formatAgo(d: Date | undefined, now = Date.now()): string {
  if (!d) return "—";
  const ms = now - d.getTime();
  return ms < 1000 ? "just now" : `${formatDuration(ms)} ago`;
}

/** A run status's name without its prefix: COMPLETED. */
export function statusName(status: RunStatus): string {
  return RunStatus[status] ?? "UNSPECIFIED";
}

/** The statuses a run can have, in the order of its life. */
export const STATUSES: readonly RunStatus[] = [
  RunStatus.QUEUED,
  RunStatus.RUNNING,
  RunStatus.WAITING,
  RunStatus.COMPLETED,
  RunStatus.FAILED,
  RunStatus.CANCELLED,
  RunStatus.SKIPPED,
];

/** Statuses in which a run has ended. */
export function hasEnded(status: RunStatus): boolean {
  return status === RunStatus.COMPLETED || status === RunStatus.FAILED || status === RunStatus.CANCELLED || status === RunStatus.SKIPPED;
}

/** A google.protobuf.Value as the JSON it holds. */
export function valueJson(v: Value | undefined): JsonValue | undefined {
  return v ? toJson(ValueSchema, v) : undefined;
}

/** JSON for reading: indented, long strings kept whole. */
export function prettyJson(v: unknown): string {
  return JSON.stringify(v, null, 2) ?? "undefined";
}

/** The first characters of an id, for tables; the whole id goes in the title. */
export function shortId(id: string, n = 8): string {
  return id.length > n + 1 ? `${id.slice(0, n)}…` : id;
}
