// 5. Recovery: for each fault, how long each run in flight at it waited
// before its next progress (a step journaled, or the run's end), against
// the bound of the fault's kind.
//
// - In flight at a fault at t: its event was answered OK (or, for a run
//   whose Send never was, the run was created) at or before t, and the run
//   had not ended by t.
// - A sleeping run is not waiting: for a run asleep at t (s2 journaled,
//   its sleep not yet over and not yet journaled) the wait counts from the
//   end of its sleep.
// - wait = next progress after that start - the start.
// - Faults overlap: a run must progress by the deadline start + bound of
//   the fault; a fault that began before that deadline (and after this
//   fault, or before it and not yet back at it) extends the deadline to its
//   own, if later. A run past its deadline is over its bound. Extended
//   deadlines are counted ("overlapping").
// - A run over its bound is counted once, at the first fault it is over
//   the bound of: the faults after it, until its next progress, do not
//   count it again ("already over").
import { percentile } from "../percentiles.js";

/** A percentile of waits, some of which may be infinite (no progress ever). */
function quantile(values: readonly number[], p: number): number {
  const q = percentile(values.map((v) => (Number.isFinite(v) ? v : Number.MAX_SAFE_INTEGER)), p);
  return q >= Number.MAX_SAFE_INTEGER / 2 ? Number.POSITIVE_INFINITY : q;
}
import { SLEEP_AFTER, SLEEP_ID, type StepValue } from "./chaos-function.js";
import type { SentEventRecord } from "./event-driver.js";
import type { FaultRecord } from "./fault-injector.js";
import { BOUND_FORMULAS, recoveryBoundMs, type FaultKind } from "./fault-kinds.js";
import type { JournalData } from "./journal-data.js";

/** One run's wait after one fault. */
interface Wait {
  fault: FaultRecord;
  runId: string;
  eventId: string;
  startMs: number;
  waitMs: number;
  deadline: number;
  nextProgress: number | undefined;
  extended: boolean;
}

/** The figures of one kind of fault. */
export interface RecoveryFigures {
  kind: FaultKind;
  faults: number;
  /** Runs in flight at those faults (a run counts once per fault). */
  runs: number;
  medianMs: number;
  p99Ms: number;
  maxMs: number;
  bound: string;
  /** The largest bound of the kind's faults, ms. */
  maxBoundMs: number;
  overBound: number;
  /** Runs whose deadline another fault extended. */
  overlapping: number;
  /** Runs in flight at a fault of this kind already over the bound of an earlier fault, not counted again. */
  alreadyOver: number;
}

/** A run over its bound, for the report. */
export interface RecoveryViolation {
  fault: number;
  kind: FaultKind;
  target: string;
  faultAt: string;
  downMs: number | undefined;
  runId: string;
  eventId: string;
  waitedFrom: string;
  waitMs: number | null;
  allowedMs: number;
  nextProgress: string | null;
  /** The run's journal: what it journaled when, as ISO times. */
  journal: Array<[string, string]>;
}

interface RunTimeline {
  id: string;
  marks: Array<[string, number]>;
  eventId: string;
  inFlightFrom: number;
  endedAt: number | undefined;
  /** Step journal times and the end, sorted. */
  progress: number[];
  /** The sleep: from s2's journal entry to its due time, unless its own entry came first. */
  sleep: { from: number; to: number; journaledAt: number | undefined } | undefined;
}

function timelines(journal: JournalData, events: readonly SentEventRecord[]): RunTimeline[] {
  const acceptedAt = new Map(events.filter((e) => e.acceptedAt !== undefined).map((e) => [e.id, e.acceptedAt!]));
  return journal.runs.map((r) => {
    const steps = journal.steps.get(r.id) ?? [];
    const progress = steps.map((s) => s.journaledAt);
    if (r.endedAt !== undefined) progress.push(r.endedAt);
    progress.sort((a, b) => a - b);
    const s2 = steps.find((s) => s.stepKey === `${SLEEP_AFTER}:0`);
    const due = (s2?.output as Partial<StepValue> | null)?.due;
    const nap = steps.find((s) => s.stepKey === `${SLEEP_ID}:0`);
    const accepted = acceptedAt.get(r.eventId);
    const marks: Array<[string, number]> = [["created", r.createdAt], ...steps.map((x): [string, number] => [x.stepKey, x.journaledAt])];
    if (r.endedAt !== undefined) marks.push([`ended ${r.status}`, r.endedAt]);
    if (accepted !== undefined) marks.unshift(["event accepted", accepted]);
    return {
      id: r.id,
      marks,
      eventId: r.eventId,
      inFlightFrom: accepted === undefined ? r.createdAt : Math.min(accepted, r.createdAt),
      endedAt: r.endedAt,
      progress,
      sleep: s2 && typeof due === "number" ? { from: s2.journaledAt, to: due, journaledAt: nap?.journaledAt } : undefined,
    };
  });
}

/** When a run's wait after something at t starts: t, or the end of a sleep it is in at t. */
function waitStart(run: RunTimeline, t: number): number {
  const s = run.sleep;
  if (s && s.from <= t && t < s.to && (s.journaledAt === undefined || s.journaledAt > t)) return s.to;
  return Math.max(t, run.inFlightFrom);
}

function firstAfter(sorted: readonly number[], t: number): number | undefined {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (sorted[mid]! > t) hi = mid;
    else lo = mid + 1;
  }
  return sorted[lo];
}

export function analyseRecovery(
  journal: JournalData,
  events: readonly SentEventRecord[],
  faults: readonly FaultRecord[],
  leaseMs: number,
  endOfRun: number,
): { figures: RecoveryFigures[]; violations: RecoveryViolation[]; overBound: number } {
  const runs = timelines(journal, events);
  const sorted = [...faults].filter((f) => f.at > 0).sort((a, b) => a.at - b.at);
  const bound = (f: FaultRecord) => recoveryBoundMs(f.kind, leaseMs, f.downMs ?? endOfRun - f.at);
  const waits: Wait[] = [];
  const overUntil = new Map<string, number>();
  const alreadyOver = new Map<FaultKind, number>();
  const byId = new Map(runs.map((r) => [r.id, r]));
  for (const fault of sorted) {
    for (const run of runs) {
      if (run.inFlightFrom > fault.at || (run.endedAt !== undefined && run.endedAt <= fault.at)) continue;
      if ((overUntil.get(run.id) ?? Number.NEGATIVE_INFINITY) > fault.at) {
        alreadyOver.set(fault.kind, (alreadyOver.get(fault.kind) ?? 0) + 1);
        continue;
      }
      const start = waitStart(run, fault.at);
      let deadline = start + bound(fault);
      let extended = false;
      for (const other of sorted) {
        if (other.at > deadline) break;
        if (other === fault) continue;
        if (other.at < fault.at && (other.restoredAt ?? endOfRun) < fault.at) continue;
        const d = waitStart(run, other.at) + bound(other);
        if (d > deadline) {
          deadline = d;
          extended = true;
        }
      }
      const next = firstAfter(run.progress, start);
      if (next === undefined || next > deadline) overUntil.set(run.id, next ?? Number.POSITIVE_INFINITY);
      waits.push({
        fault,
        runId: run.id,
        eventId: run.eventId,
        startMs: start,
        waitMs: next === undefined ? Number.POSITIVE_INFINITY : next - start,
        deadline,
        nextProgress: next,
        extended,
      });
    }
  }
  const kinds = [...new Set(sorted.map((f) => f.kind))];
  const figures = kinds.map((kind): RecoveryFigures => {
    const of = waits.filter((w) => w.fault.kind === kind);
    const values = of.map((w) => w.waitMs);
    const kindFaults = sorted.filter((f) => f.kind === kind);
    return {
      kind,
      faults: kindFaults.length,
      runs: of.length,
      medianMs: quantile(values, 50),
      p99Ms: quantile(values, 99),
      maxMs: values.length ? Math.max(...values) : Number.NaN,
      bound: BOUND_FORMULAS[kind],
      maxBoundMs: Math.max(...kindFaults.map(bound)),
      overBound: of.filter((w) => w.nextProgress === undefined || w.nextProgress > w.deadline).length,
      overlapping: of.filter((w) => w.extended).length,
      alreadyOver: alreadyOver.get(kind) ?? 0,
    };
  });
  const over = waits.filter((w) => w.nextProgress === undefined || w.nextProgress > w.deadline);
  // Up to ten of each kind, in time order.
  const shown = kinds.flatMap((k) => over.filter((w) => w.fault.kind === k).slice(0, 10)).sort((a, b) => a.fault.at - b.fault.at);
  const violations = shown.map(
    (w): RecoveryViolation => ({
      fault: w.fault.id,
      kind: w.fault.kind,
      target: w.fault.target,
      faultAt: new Date(w.fault.at).toISOString(),
      downMs: w.fault.downMs,
      runId: w.runId,
      eventId: w.eventId,
      waitedFrom: new Date(w.startMs).toISOString(),
      waitMs: Number.isFinite(w.waitMs) ? w.waitMs : null,
      allowedMs: w.deadline - w.startMs,
      nextProgress: w.nextProgress === undefined ? null : new Date(w.nextProgress).toISOString(),
      journal: byId.get(w.runId)!.marks.map(([what, at]): [string, string] => [what, new Date(at).toISOString()]),
    }),
  );
  return { figures, violations, overBound: over.length };
}
