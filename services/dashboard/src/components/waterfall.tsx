import { AwaitKind, RunStatus, StepKind, type Run } from "@stepwise/proto";
import { dateOf, formatDuration, formatTime, shortId, valueJson } from "../format.js";
import { Link } from "../router.js";

// The run's timeline: each step and attempt as a bar on one time axis
// from the run's creation, the sleeps, waits and invokes as the gaps they
// held the run in, and what a WAITING run waits for now as open gaps.

/** One part of a row: a bar or a gap, in ms since the epoch. */
interface Segment {
  start: number;
  end: number;
  kind: "step" | "failed" | "retry" | "sleep" | "wait" | "invoke" | "pending" | "cancelled";
  title: string;
}

/** One row of the waterfall. */
interface Row {
  key: string;
  label: string;
  /** What the row waited for, or how it ended. */
  detail: string;
  link?: { href: string; text: string } | undefined;
  segments: Segment[];
  order: number;
}

/** The rows of a run's waterfall, in time order, and the span of its axis. */
export function waterfallRows(run: Run, now: number): { rows: Row[]; t0: number; t1: number } {
  const t0 = dateOf(run.createdAt)?.getTime() ?? now;
  const runStart = dateOf(run.startedAt)?.getTime() ?? t0;
  const rows: Row[] = [];
  // What ended before a moment: where a gap the engine ended began.
  const ends: number[] = [];
  for (const a of run.failedAttempts) ends.push(dateOf(a.endedAt)?.getTime() ?? 0);
  for (const s of run.steps) ends.push(s.kind === StepKind.RUN ? (dateOf(s.endedAt)?.getTime() ?? 0) : (dateOf(s.journaledAt)?.getTime() ?? 0));
  const lastEndBefore = (t: number) => ends.reduce((best, e) => (e < t && e > best ? e : best), runStart);

  run.failedAttempts.forEach((a, i) => {
    const start = dateOf(a.startedAt)?.getTime() ?? dateOf(a.endedAt)?.getTime() ?? t0;
    const end = dateOf(a.endedAt)?.getTime() ?? start;
    const retryAt = dateOf(a.retryAt)?.getTime() ?? end;
    const name = a.stepKey === "" ? "handler" : a.stepId;
    rows.push({
      key: `attempt:${a.stepKey}:${a.attempt}`,
      label: `${name} · attempt ${a.attempt}`,
      detail: `failed: ${a.error?.name ?? "Error"}${a.error?.message ? `: ${a.error.message}` : ""}`,
      segments: [
        { start, end, kind: "failed", title: `attempt ${a.attempt} failed after ${formatDuration(end - start)}` },
        { start: end, end: Math.min(retryAt, now), kind: "retry", title: `next attempt at ${formatTime(new Date(retryAt))}` },
      ],
      order: i,
    });
  });

  run.steps.forEach((s, i) => {
    const journaled = dateOf(s.journaledAt)?.getTime() ?? t0;
    const order = run.failedAttempts.length + i;
    if (s.kind === StepKind.SLEEP || s.kind === StepKind.WAIT_FOR_EVENT || s.kind === StepKind.INVOKE) {
      const start = lastEndBefore(journaled);
      const kind = s.kind === StepKind.SLEEP ? "sleep" : s.kind === StepKind.WAIT_FOR_EVENT ? "wait" : "invoke";
      const out = valueJson(s.output) as { id?: string; name?: string } | null | undefined;
      let detail: string;
      if (kind === "sleep") detail = `slept until ${formatTime(dateOf(s.startedAt))}`;
      else if (kind === "wait") detail = out && typeof out === "object" ? `got event ${out.name ?? ""} (${shortId(out.id ?? "", 12)})` : "timed out: no event came";
      else detail = s.error ? `${s.error.name}: ${s.error.message}` : "the invoked run completed";
      rows.push({
        key: s.key,
        label: s.id,
        detail,
        link: s.invokedRunId ? { href: `/runs/${s.invokedRunId}`, text: `run ${shortId(s.invokedRunId)}` } : undefined,
        segments: [{ start, end: journaled, kind, title: `${kind} for ${formatDuration(journaled - start)}` }],
        order,
      });
      return;
    }
    const start = dateOf(s.startedAt)?.getTime() ?? journaled;
    const end = dateOf(s.endedAt)?.getTime() ?? journaled;
    rows.push({
      key: s.key,
      label: s.attempt > 1 ? `${s.id} · attempt ${s.attempt}` : s.id,
      detail: s.error ? `failed: ${s.error.name}${s.error.message ? `: ${s.error.message}` : ""}` : "",
      segments: [{ start, end, kind: s.error ? "failed" : "step", title: `${s.key}: ${formatDuration(end - start)}` }],
      order,
    });
  });

  const suspended = lastEndBefore(now + 1);
  run.awaits.forEach((a, i) => {
    const due = dateOf(a.dueAt);
    const until = due ? ` until ${formatTime(due)}` : "";
    let detail: string;
    switch (a.kind) {
      case AwaitKind.SLEEP:
        detail = `sleeping${until}`;
        break;
      case AwaitKind.WAIT_FOR_EVENT:
        detail = `waiting for event ${a.eventName}${a.condition ? ` if ${a.condition}` : ""}${due ? `, times out at ${formatTime(due)}` : ""}`;
        break;
      case AwaitKind.INVOKE:
        detail = `waiting for the invoked run${due ? `, times out at ${formatTime(due)}` : ""}`;
        break;
      default:
        detail = `next attempt${due ? ` at ${formatTime(due)}` : ""}`;
    }
    rows.push({
      key: `await:${a.stepKey}`,
      label: a.stepKey === "" ? "handler" : a.stepId,
      detail,
      link: a.invokedRunId ? { href: `/runs/${a.invokedRunId}`, text: `run ${shortId(a.invokedRunId)}` } : undefined,
      segments: [{ start: suspended, end: now, kind: "pending", title: detail }],
      order: 1_000_000 + i,
    });
  });

  // A run cancelled while it slept or waited: the time until the cancel.
  const endedAt = dateOf(run.endedAt)?.getTime();
  if (run.status === RunStatus.CANCELLED && endedAt !== undefined) {
    const from = lastEndBefore(endedAt + 1);
    rows.push({
      key: "cancelled",
      label: "cancelled",
      detail: run.error?.message ?? "",
      segments: [{ start: from, end: endedAt, kind: "cancelled", title: `cancelled after ${formatDuration(endedAt - from)} more` }],
      order: 2_000_000,
    });
  }

  rows.sort((a, b) => (a.segments[0]?.start ?? 0) - (b.segments[0]?.start ?? 0) || a.order - b.order);
  let t1 = endedAt ?? now;
  for (const r of rows) for (const s of r.segments) t1 = Math.max(t1, s.end);
  return { rows, t0, t1: Math.max(t1, t0 + 1) };
}

/** The waterfall of a run's steps and attempts. */
export function Waterfall(props: { run: Run; now: number }) {
  const { rows, t0, t1 } = waterfallRows(props.run, props.now);
  const span = t1 - t0;
  const pct = (t: number) => `${Math.max(0, Math.min(100, ((t - t0) / span) * 100))}%`;
  const width = (s: Segment) => `${Math.max(0.4, ((Math.max(s.end, s.start) - s.start) / span) * 100)}%`;
  if (rows.length === 0) return <p class="muted">No step journaled yet.</p>;
  return (
    <div class="waterfall" role="table" aria-label="Step timeline">
      <div class="wf-row wf-axis" role="row">
        <div class="wf-label" />
        <div class="wf-track">
          {[0, 0.25, 0.5, 0.75, 1].map((f) => (
            <span class="wf-tick" style={{ left: `${f * 100}%` }} key={f}>
              {f === 0 ? formatTime(new Date(t0)) : `+${formatDuration(span * f)}`}
            </span>
          ))}
        </div>
        <div class="wf-dur" />
      </div>
      {rows.map((r) => {
        const first = r.segments[0]!;
        const last = r.segments[r.segments.length - 1]!;
        return (
          <div class="wf-row" role="row" data-step={r.key} key={r.key}>
            <div class="wf-label" title={r.key}>
              <span class="wf-name">{r.label}</span>
              {r.detail ? <span class="wf-detail">{r.detail}</span> : null}
              {r.link ? (
                <Link href={r.link.href} class="wf-link">
                  {r.link.text}
                </Link>
              ) : null}
            </div>
            <div class="wf-track">
              {r.segments.map((s, i) => (
                <span class={`wf-bar wf-${s.kind}`} style={{ left: pct(s.start), width: width(s) }} title={s.title} key={i} />
              ))}
            </div>
            <div class="wf-dur">{formatDuration(last.end - first.start)}</div>
          </div>
        );
      })}
    </div>
  );
}
