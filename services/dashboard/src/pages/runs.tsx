import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { RunStatus, type Run } from "@stepwise/proto";
import { useState } from "preact/hooks";
import { runs } from "../client.js";
import { RpcErrorBanner } from "../components/error-detail.js";
import { StatusBadge } from "../components/status-badge.js";
import { dateOf, formatDuration, formatTime, shortId, statusName, STATUSES } from "../format.js";
import { usePolled } from "../polling.js";
import { Link, navigate, withQuery } from "../router.js";

/** The time ranges of the filter, by their query value. */
const RANGES: Record<string, { label: string; ms: number }> = {
  "15m": { label: "Last 15 minutes", ms: 15 * 60_000 },
  "1h": { label: "Last hour", ms: 3_600_000 },
  "24h": { label: "Last 24 hours", ms: 86_400_000 },
  "7d": { label: "Last 7 days", ms: 7 * 86_400_000 },
};

const PAGE_SIZE = 25;

/** How long a run took, or has been going. */
export function runDuration(run: Run, now: number): string {
  const start = dateOf(run.startedAt) ?? dateOf(run.createdAt);
  if (!start) return "—";
  const end = dateOf(run.endedAt)?.getTime() ?? now;
  return formatDuration(end - start.getTime());
}

/**
 * The Runs page: every run, newest first, filtered by status, function
 * (app/function), time range and event id, a page at a time; it reads its
 * page again every 1.5 s while open. The filters and the page live in the
 * address, so a view can be shared.
 */
export function RunsPage(props: { query: URLSearchParams }) {
  const q = props.query;
  const status = q.get("status") ?? "";
  const fn = q.get("function") ?? "";
  const range = q.get("range") ?? "";
  const eventId = q.get("event") ?? "";
  const page = q.get("page") ?? "";
  // Tokens of the pages before this one, to go back.
  const [previous, setPrevious] = useState<string[]>([]);
  const [eventInput, setEventInput] = useState(eventId);

  const [appId, functionId] = fn.includes("/") ? (fn.split("/", 2) as [string, string]) : ["", fn];
  const list = usePolled(
    () =>
      runs.listRuns({
        status: status ? (RunStatus[status as keyof typeof RunStatus] ?? RunStatus.UNSPECIFIED) : RunStatus.UNSPECIFIED,
        appId,
        functionId,
        eventId,
        pageSize: PAGE_SIZE,
        pageToken: page,
        ...(RANGES[range] ? { createdAfter: timestampFromMs(Date.now() - RANGES[range].ms) } : {}),
      }),
    [status, fn, range, eventId, page],
  );
  const functions = usePolled(() => runs.listFunctions({}), [], false);

  const set = (changes: Record<string, string | undefined>) => {
    setPrevious([]);
    navigate(withQuery("/runs", q, { ...changes, page: undefined }), true);
  };
  const now = Date.now();

  return (
    <section>
      <h1>Runs</h1>
      <form
        class="filters"
        onSubmit={(e) => {
          e.preventDefault();
          set({ event: eventInput.trim() });
        }}
      >
        <label>
          Status
          <select name="status" value={status} onChange={(e) => set({ status: e.currentTarget.value })}>
            <option value="">All</option>
            {STATUSES.map((s) => (
              <option value={statusName(s)} key={s}>
                {statusName(s)}
              </option>
            ))}
          </select>
        </label>
        <label>
          Function
          <select name="function" value={fn} onChange={(e) => set({ function: e.currentTarget.value })}>
            <option value="">All</option>
            {functions.data?.functions.map((f) => (
              <option value={`${f.appId}/${f.functionId}`} key={`${f.appId}/${f.functionId}`}>
                {f.appId}/{f.functionId}
              </option>
            ))}
            {fn && !functions.data?.functions.some((f) => `${f.appId}/${f.functionId}` === fn) ? <option value={fn}>{fn}</option> : null}
          </select>
        </label>
        <label>
          Created
          <select name="range" value={range} onChange={(e) => set({ range: e.currentTarget.value })}>
            <option value="">Any time</option>
            {Object.entries(RANGES).map(([k, r]) => (
              <option value={k} key={k}>
                {r.label}
              </option>
            ))}
          </select>
        </label>
        <label>
          Event id
          <input name="event" value={eventInput} placeholder="any" onInput={(e) => setEventInput(e.currentTarget.value)} />
        </label>
        <button type="submit">Apply</button>
        {status || fn || range || eventId ? (
          <button
            type="button"
            class="secondary"
            onClick={() => {
              setEventInput("");
              setPrevious([]);
              navigate("/runs", true);
            }}
          >
            Clear
          </button>
        ) : null}
        <span class="live" title="Read again every 1.5 s while this tab is visible">
          live
        </span>
      </form>
      <RpcErrorBanner error={list.error} />
      <table class="runs-table">
        <thead>
          <tr>
            <th>Status</th>
            <th>Function</th>
            <th>App</th>
            <th>Event</th>
            <th>Started</th>
            <th>Duration</th>
            <th>Run</th>
          </tr>
        </thead>
        <tbody>
          {list.data?.runs.map((r) => (
            <tr key={r.id} data-run={r.id} class="clickable" onClick={(e) => !e.defaultPrevented && navigate(`/runs/${r.id}`)}>
              <td>
                <StatusBadge status={r.status} />
              </td>
              <td>
                <Link href={`/runs/${r.id}`}>{r.functionId}</Link>
              </td>
              <td>{r.appId}</td>
              <td title={r.event?.id}>
                {r.event?.name} <span class="muted mono">{shortId(r.event?.id ?? "", 10)}</span>
              </td>
              <td title={dateOf(r.createdAt)?.toISOString()}>{formatTime(dateOf(r.startedAt) ?? dateOf(r.createdAt))}</td>
              <td>{runDuration(r, now)}</td>
              <td class="mono muted" title={r.id}>
                {shortId(r.id)}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {list.data && list.data.runs.length === 0 ? <p class="empty">No run matches.</p> : null}
      {list.loading && !list.data ? <p class="muted">Loading…</p> : null}
      <div class="pager">
        <button
          type="button"
          class="secondary"
          disabled={previous.length === 0 && !page}
          onClick={() => {
            const back = previous.slice(0, -1);
            const token = previous[previous.length - 1] ?? "";
            setPrevious(back);
            navigate(withQuery("/runs", q, { page: token }), true);
          }}
        >
          ← Newer
        </button>
        <button
          type="button"
          class="secondary"
          disabled={!list.data?.nextPageToken}
          onClick={() => {
            setPrevious([...previous, page]);
            navigate(withQuery("/runs", q, { page: list.data?.nextPageToken }), true);
          }}
        >
          Older →
        </button>
      </div>
    </section>
  );
}
