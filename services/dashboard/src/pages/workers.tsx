import type { WorkerInfo } from "@stepwise/proto";
import { runs } from "../client.js";
import { RpcErrorBanner } from "../components/error-detail.js";
import { dateOf, formatAgo, shortId } from "../format.js";
import { usePolled } from "../polling.js";

/**
 * The Workers page: the workers connected now, by app and executor, with
 * their functions, capacity and slots in use (as of their executor's last
 * heartbeat interval). Read again every 2 s.
 */
export function WorkersPage() {
  const list = usePolled(() => runs.listWorkers({}), [], true, 2000);
  const byApp = new Map<string, WorkerInfo[]>();
  for (const w of list.data?.workers ?? []) {
    const l = byApp.get(w.appId);
    if (l) l.push(w);
    else byApp.set(w.appId, [w]);
  }
  const now = Date.now();
  return (
    <section>
      <h1>Workers</h1>
      <RpcErrorBanner error={list.error} />
      {list.data && byApp.size === 0 ? <p class="empty">No worker is connected.</p> : null}
      {[...byApp].map(([appId, workers]) => {
        const capacity = workers.reduce((n, w) => n + w.capacity, 0);
        const used = workers.reduce((n, w) => n + w.slotsInUse, 0);
        return (
          <div class="card" key={appId} data-app={appId}>
            <h2>
              {appId}{" "}
              <span class="muted small">
                {workers.length} worker{workers.length === 1 ? "" : "s"}, {used} of {capacity} slots in use
              </span>
            </h2>
            <table>
              <thead>
                <tr>
                  <th>Worker</th>
                  <th>Executor</th>
                  <th>Functions</th>
                  <th>Slots in use</th>
                  <th>SDK</th>
                  <th>Connected</th>
                  <th>Heartbeat</th>
                </tr>
              </thead>
              <tbody>
                {workers.map((w) => (
                  <tr key={`${w.executorId}/${w.workerId}`} data-worker={w.workerId}>
                    <td class="mono" title={w.workerId}>
                      {shortId(w.workerId, 12)}
                    </td>
                    <td title={w.executorId}>
                      {w.executorHost} <span class="mono muted">{shortId(w.executorId)}</span>
                    </td>
                    <td>
                      {w.functionIds.map((f) => (
                        <span class="tag" key={f}>
                          {f}
                        </span>
                      ))}
                    </td>
                    <td>
                      <span class="slots" title={`${w.slotsInUse} of ${w.capacity}`}>
                        <span class="slots-used" style={{ width: `${w.capacity ? (100 * w.slotsInUse) / w.capacity : 0}%` }} />
                      </span>{" "}
                      {w.slotsInUse} / {w.capacity}
                    </td>
                    <td class="small">{w.sdk || "—"}</td>
                    <td>{formatAgo(dateOf(w.connectedAt), now)}</td>
                    <td>{formatAgo(dateOf(w.heartbeatAt), now)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        );
      })}
    </section>
  );
}
