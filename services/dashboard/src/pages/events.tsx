import { ConnectError } from "@connectrpc/connect";
import type { JsonObject } from "@bufbuild/protobuf";
import { useState } from "preact/hooks";
import { ingest, runs } from "../client.js";
import { RpcErrorBanner } from "../components/error-detail.js";
import { JsonBlock } from "../components/json-block.js";
import { StatusBadge } from "../components/status-badge.js";
import { dateOf, formatTime, shortId } from "../format.js";
import { usePolled } from "../polling.js";
import { Link, navigate, withQuery } from "../router.js";

const PAGE_SIZE = 25;

/**
 * The Events page: a form that sends a test event (name and JSON data)
 * and then links to the runs it starts, and the stored events, newest
 * first, each with its runs, filtered by name, a page at a time. Both are
 * read again every 1.5 s.
 */
export function EventsPage(props: { query: URLSearchParams }) {
  const q = props.query;
  const name = q.get("name") ?? "";
  const page = q.get("page") ?? "";
  const [nameInput, setNameInput] = useState(name);
  const [previous, setPrevious] = useState<string[]>([]);
  const list = usePolled(() => runs.listEvents({ name, pageSize: PAGE_SIZE, pageToken: page }), [name, page]);

  return (
    <section>
      <h1>Events</h1>
      <SendEventForm />
      <h2>Recent events</h2>
      <form
        class="filters"
        onSubmit={(e) => {
          e.preventDefault();
          setPrevious([]);
          navigate(withQuery("/events", q, { name: nameInput.trim(), page: undefined }), true);
        }}
      >
        <label>
          Name
          <input name="name" value={nameInput} placeholder="any" onInput={(e) => setNameInput(e.currentTarget.value)} />
        </label>
        <button type="submit">Filter</button>
        <span class="live" title="Read again every 1.5 s while this tab is visible">
          live
        </span>
      </form>
      <RpcErrorBanner error={list.error} />
      <table class="events-table">
        <thead>
          <tr>
            <th>Received</th>
            <th>Name</th>
            <th>Id</th>
            <th>Runs</th>
            <th>Data</th>
          </tr>
        </thead>
        <tbody>
          {list.data?.events.map((e) => (
            <tr key={e.event?.id} data-event={e.event?.id}>
              <td>{formatTime(dateOf(e.receivedAt))}</td>
              <td>{e.event?.name}</td>
              <td class="mono" title={e.event?.id}>
                {shortId(e.event?.id ?? "", 12)}
              </td>
              <td>
                {e.runs.length === 0 ? <span class="muted">none</span> : null}
                {e.runs.map((r) => (
                  <div key={r.id} class="event-run">
                    <StatusBadge status={r.status} /> <Link href={`/runs/${r.id}`}>{r.functionId}</Link>
                  </div>
                ))}
              </td>
              <td>
                <details>
                  <summary class="muted">payload</summary>
                  <JsonBlock value={e.event?.data ?? {}} />
                </details>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {list.data && list.data.events.length === 0 ? <p class="empty">No event stored yet.</p> : null}
      <div class="pager">
        <button
          type="button"
          class="secondary"
          disabled={previous.length === 0 && !page}
          onClick={() => {
            const token = previous[previous.length - 1] ?? "";
            setPrevious(previous.slice(0, -1));
            navigate(withQuery("/events", q, { page: token }), true);
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
            navigate(withQuery("/events", q, { page: list.data?.nextPageToken }), true);
          }}
        >
          Older →
        </button>
      </div>
    </section>
  );
}

/** Sends one event with IngestService.Send, then follows the runs it starts. */
function SendEventForm() {
  const [name, setName] = useState("");
  const [data, setData] = useState("{}");
  const [problem, setProblem] = useState<string | undefined>();
  const [sentId, setSentId] = useState<string | undefined>();
  const [busy, setBusy] = useState(false);

  const submit = async () => {
    setProblem(undefined);
    let parsed: unknown;
    try {
      parsed = JSON.parse(data || "{}");
    } catch (err) {
      setProblem(`The data is not JSON: ${err instanceof Error ? err.message : String(err)}`);
      return;
    }
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
      setProblem("The data must be a JSON object.");
      return;
    }
    setBusy(true);
    try {
      const res = await ingest.send({ events: [{ name: name.trim(), data: parsed as JsonObject }] });
      setSentId(res.ids[0]);
    } catch (err) {
      setProblem(ConnectError.from(err).rawMessage);
    } finally {
      setBusy(false);
    }
  };

  return (
    <div class="card send-event">
      <h2>Send a test event</h2>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          void submit();
        }}
      >
        <label>
          Name
          <input name="event-name" required value={name} placeholder="order.placed" onInput={(e) => setName(e.currentTarget.value)} />
        </label>
        <label>
          Data (JSON object)
          <textarea name="event-data" rows={4} value={data} onInput={(e) => setData(e.currentTarget.value)} spellcheck={false} />
        </label>
        <button type="submit" disabled={busy || name.trim() === ""}>
          Send event
        </button>
      </form>
      {problem ? (
        <div class="banner banner-error" role="alert">
          {problem}
        </div>
      ) : null}
      {sentId ? <SentEvent eventId={sentId} key={sentId} /> : null}
    </div>
  );
}

/** The runs of the event just sent, read every 1.5 s as they appear and move on. */
function SentEvent(props: { eventId: string }) {
  const list = usePolled(() => runs.listRuns({ eventId: props.eventId, pageSize: 100 }), [props.eventId]);
  return (
    <div class="sent" data-sent-event={props.eventId}>
      <p>
        Sent event <span class="mono">{props.eventId}</span>.{" "}
        <Link href={`/runs?event=${encodeURIComponent(props.eventId)}`}>Its runs →</Link>
      </p>
      {list.data && list.data.runs.length === 0 ? <p class="muted">No run yet (a trigger of its name starts one).</p> : null}
      <ul class="sent-runs">
        {list.data?.runs.map((r) => (
          <li key={r.id}>
            <StatusBadge status={r.status} /> <Link href={`/runs/${r.id}`}>{`${r.appId}/${r.functionId}`}</Link>{" "}
            <span class="mono muted">{shortId(r.id)}</span>
          </li>
        ))}
      </ul>
    </div>
  );
}
