import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { FunctionInfo } from "@stepwise/proto";
import { runs } from "../client.js";
import { RpcErrorBanner } from "../components/error-detail.js";
import { JsonBlock } from "../components/json-block.js";
import { StatusBadge } from "../components/status-badge.js";
import { dateOf, formatAgo, formatTime, shortId } from "../format.js";
import { usePolled } from "../polling.js";
import { Link } from "../router.js";
import { NotFoundPage } from "./not-found.js";
import { runDuration } from "./runs.js";

const HOUR_MS = 3_600_000;

/** A function's triggers as the SDK registered them (config.triggers), one line each. */
export function triggerLines(f: FunctionInfo): string[] {
  const triggers = (f.config?.["triggers"] ?? []) as Array<Record<string, unknown>>;
  if (!Array.isArray(triggers)) return [];
  return triggers.map((t) => {
    if (typeof t["cron"] === "string") return `cron ${t["cron"]}${typeof t["timezone"] === "string" ? ` (${t["timezone"]})` : ""}`;
    const ev = typeof t["event"] === "string" ? t["event"] : "?";
    const cond = typeof t["if"] === "string" ? t["if"] : typeof t["condition"] === "string" ? t["condition"] : "";
    return cond ? `event ${ev} if ${cond}` : `event ${ev}`;
  });
}

/** The counts of the last hour's runs as status badges with their numbers. */
function Counts(props: { f: FunctionInfo }) {
  if (props.f.runCounts.length === 0) return <span class="muted">no runs</span>;
  return (
    <span class="counts">
      {props.f.runCounts.map((c) => (
        <span class="count" key={c.status}>
          <StatusBadge status={c.status} /> {c.count}
        </span>
      ))}
    </span>
  );
}

/** The Functions page: each registered function, its triggers and the last hour's runs by status. */
export function FunctionsPage() {
  const list = usePolled(() => runs.listFunctions({ countsSince: timestampFromMs(Date.now() - HOUR_MS) }), [], true, 5000);
  return (
    <section>
      <h1>Functions</h1>
      <RpcErrorBanner error={list.error} />
      <table>
        <thead>
          <tr>
            <th>Function</th>
            <th>App</th>
            <th>Triggers</th>
            <th>Runs in the last hour</th>
            <th>Registered</th>
          </tr>
        </thead>
        <tbody>
          {list.data?.functions.map((f) => (
            <tr key={`${f.appId}/${f.functionId}`} data-function={`${f.appId}/${f.functionId}`}>
              <td>
                <Link href={`/functions/${f.appId}/${f.functionId}`}>{f.functionId}</Link>
                {f.name && f.name !== f.functionId ? <div class="muted">{f.name}</div> : null}
              </td>
              <td>{f.appId}</td>
              <td>
                {triggerLines(f).map((t) => (
                  <div class="mono small" key={t}>
                    {t}
                  </div>
                ))}
              </td>
              <td>
                <Counts f={f} />
              </td>
              <td title={dateOf(f.updatedAt)?.toISOString()}>{formatAgo(dateOf(f.updatedAt))}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {list.data && list.data.functions.length === 0 ? <p class="empty">No worker has registered a function yet.</p> : null}
    </section>
  );
}

/** One function: its triggers, its configuration as registered, the last hour's counts and its last runs. */
export function FunctionPage(props: { appId: string; functionId: string }) {
  const { appId, functionId } = props;
  const info = usePolled(() => runs.listFunctions({ appId, countsSince: timestampFromMs(Date.now() - HOUR_MS) }), [appId, functionId], true, 5000);
  const last = usePolled(() => runs.listRuns({ appId, functionId, pageSize: 10 }), [appId, functionId]);
  const f = info.data?.functions.find((x) => x.functionId === functionId);
  if (info.data && !f) return <NotFoundPage title="Function not found" message={`No worker registered ${appId}/${functionId}.`} />;
  const now = Date.now();
  return (
    <section>
      <h1>
        {functionId} <span class="muted">in {appId}</span>
      </h1>
      <RpcErrorBanner error={info.error ?? last.error} />
      {f ? (
        <>
          <dl class="facts">
            <div>
              <dt>Name</dt>
              <dd>{f.name}</dd>
            </div>
            <div>
              <dt>Registered</dt>
              <dd>{formatTime(dateOf(f.updatedAt))}</dd>
            </div>
            <div>
              <dt>Last hour</dt>
              <dd>
                <Counts f={f} />
              </dd>
            </div>
          </dl>
          <h2>Triggers</h2>
          <ul>
            {triggerLines(f).map((t) => (
              <li class="mono" key={t}>
                {t}
              </li>
            ))}
          </ul>
          <h2>Configuration</h2>
          <JsonBlock value={f.config ?? {}} label="Function configuration" />
        </>
      ) : null}
      <h2>
        Last runs <Link href={`/runs?function=${encodeURIComponent(`${appId}/${functionId}`)}`} class="small">all runs →</Link>
      </h2>
      <table>
        <thead>
          <tr>
            <th>Status</th>
            <th>Event</th>
            <th>Started</th>
            <th>Duration</th>
            <th>Run</th>
          </tr>
        </thead>
        <tbody>
          {last.data?.runs.map((r) => (
            <tr key={r.id}>
              <td>
                <StatusBadge status={r.status} />
              </td>
              <td>{r.event?.name}</td>
              <td>{formatTime(dateOf(r.startedAt) ?? dateOf(r.createdAt))}</td>
              <td>{runDuration(r, now)}</td>
              <td class="mono">
                <Link href={`/runs/${r.id}`}>{shortId(r.id)}</Link>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {last.data && last.data.runs.length === 0 ? <p class="empty">No run yet.</p> : null}
    </section>
  );
}
