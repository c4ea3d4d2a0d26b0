// The figures of a chaos run: a table for people, the same as JSON.
import type { ChaosOptions } from "./chaos-options.js";
import type { StreamReplicas } from "./chaos-deployment.js";
import type { CheckResult, DuplicateFigures } from "./checks.js";
import type { FaultRecord } from "./fault-injector.js";
import { FAULT_KINDS } from "./fault-kinds.js";
import type { CrashRecord } from "./supervisor.js";
import type { RecoveryFigures, RecoveryViolation } from "./recovery.js";

/** Everything a chaos run reports; what --out writes. */
export interface ChaosResults {
  ok: boolean;
  command: string;
  seed: number;
  startedAt: string;
  options: Omit<ChaosOptions, "out" | "logDir" | "keepLogs">;
  logDir: string;
  streamReplicas: StreamReplicas | { error: string };
  figures: {
    eventsSent: number;
    eventsAccepted: number;
    /** Sent, never answered OK (they may still have made a run). */
    eventsUnconfirmed: number;
    failedSendCalls: number;
    eventsStored: number;
    runs: number;
    runsCompleted: number;
    /** Every run ended within the settle time. */
    settled: boolean;
    settleMs: number;
    faultsByKind: Record<string, number>;
    duplicates: DuplicateFigures;
    recovery: RecoveryFigures[];
  };
  checks: CheckResult[];
  recoveryViolations: RecoveryViolation[];
  faults: FaultRecord[];
  /** Processes that exited on their own. */
  crashes: CrashRecord[];
  /** Anything that went wrong in the harness itself (a process that would not start again, a torn log line). */
  notes: string[];
}

const secs = (ms: number) => (Number.isFinite(ms) ? `${(ms / 1000).toFixed(2)} s` : Number.isNaN(ms) ? "–" : "never");

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  const line = (r: string[]) => `| ${r.map((c, i) => c.padEnd(widths[i]!)).join(" | ")} |`;
  return [line(rows[0]!), `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`, ...rows.slice(1).map(line)].join("\n");
}

/** The figures as Markdown tables (they paste into docs/reliability.md as they are). */
export function formatResults(r: ChaosResults): string {
  const f = r.figures;
  const replicas =
    "error" in r.streamReplicas
      ? `unknown (${r.streamReplicas.error})`
      : `events ${r.streamReplicas.events ?? "?"}, work ${r.streamReplicas.work ?? "?"}, consumers ${[...new Set(Object.values(r.streamReplicas.consumers).map((v) => v ?? "stream's"))].join("/") || "none"}`;
  const faults = FAULT_KINDS.filter((k) => f.faultsByKind[k]).map((k) => `${k} ${f.faultsByKind[k]}`).join(", ");
  const d = f.duplicates;
  const summary = table([
    ["figure", "value"],
    ["duration, events/s, faults/min, lease", `${secs(r.options.durationMs)}, ${r.options.rate}, ${r.options.faultRate}, ${secs(r.options.leaseMs)}`],
    ["processes", `${r.options.executors} executors, ${r.options.schedulers} schedulers, ${r.options.ingests} ingests, ${r.options.workers} workers; 3 NATS nodes, 1 Postgres`],
    ["stream replicas (as JetStream reports)", replicas],
    ["events sent / accepted / unconfirmed", `${f.eventsSent} / ${f.eventsAccepted} / ${f.eventsUnconfirmed} (${f.failedSendCalls} failed Send calls retried)`],
    ["runs / completed", `${f.runs} / ${f.runsCompleted}${f.settled ? "" : ` (not all ended within ${secs(f.settleMs)})`}`],
    ["faults", `${Object.values(f.faultsByKind).reduce((a, b) => a + b, 0)}: ${faults || "none"}`],
    ["processes that exited on their own", r.crashes.length ? r.crashes.map((c) => `${c.process} (${c.exit})`).join(", ") : "none"],
    ["step body executions", String(d.executions)],
    ["duplicate executions: explained / unexplained", `${d.explained} / ${d.unexplained}${d.explained ? ` (${Object.entries(d.byFault).map(([k, n]) => `${k} ${n}`).join(", ")})` : ""}`],
  ]);
  const recovery = table([
    ["fault kind", "faults", "runs in flight", "median", "p99", "max", "bound", "largest bound", "over bound", "overlapping", "already over"],
    ...f.recovery.map((x) => [
      x.kind, String(x.faults), String(x.runs), secs(x.medianMs), secs(x.p99Ms), secs(x.maxMs), x.bound, secs(x.maxBoundMs),
      String(x.overBound), String(x.overlapping), String(x.alreadyOver),
    ]),
  ]);
  const checks = table([["check", "result", "passed"], ...r.checks.map((c) => [c.name, c.summary, c.ok ? "yes" : "NO"])]);
  const problems = r.checks.filter((c) => !c.ok).flatMap((c) => c.problems.slice(0, 10).map((p) => `- ${c.name}: ${p}`));
  const violations = r.recoveryViolations.slice(0, 10).map(
    (v) =>
      `- fault ${v.fault} ${v.kind} ${v.target} at ${v.faultAt} (down ${v.downMs === undefined ? "?" : secs(v.downMs)}): run ${v.runId} (event ${v.eventId}) waited from ${v.waitedFrom} ${v.waitMs === null ? "and never progressed" : secs(v.waitMs)}, allowed ${secs(v.allowedMs)}`,
  );
  return [
    summary,
    "",
    recovery,
    "",
    checks,
    ...(problems.length ? ["", "Problems:", ...problems] : []),
    ...(violations.length ? ["", "Runs over their recovery bound:", ...violations] : []),
    ...(r.notes.length ? ["", "Notes:", ...r.notes.map((n) => `- ${n}`)] : []),
    "",
    `verdict: ${r.ok ? "PASS" : "FAIL"} (seed ${r.seed}; logs in ${r.logDir})`,
  ].join("\n");
}
