import { Code, ConnectError } from "@connectrpc/connect";
import { RunStatus, type Run } from "@stepwise/proto";
import { useState } from "preact/hooks";
import { runs } from "../client.js";
import { ErrorDetailView, RpcErrorBanner } from "../components/error-detail.js";
import { JsonBlock } from "../components/json-block.js";
import { StatusBadge } from "../components/status-badge.js";
import { Waterfall } from "../components/waterfall.js";
import { dateOf, formatTime, hasEnded, shortId, valueJson } from "../format.js";
import { usePolled } from "../polling.js";
import { Link, navigate } from "../router.js";
import { NotFoundPage } from "./not-found.js";
import { runDuration } from "./runs.js";

/**
 * The Run page: its event, its timeline (a waterfall of steps, attempts,
 * sleeps and waits), each failed attempt's error, its output or error, its
 * links to other runs, and the actions: cancel, rerun, replay from a step.
 * It reads the run again every 1.5 s until the run has ended.
 */
export function RunPage(props: { runId: string }) {
  const [ended, setEnded] = useState(false);
  const got = usePolled(
    async () => {
      const res = await runs.getRun({ runId: props.runId });
      if (res.run && hasEnded(res.run.status)) setEnded(true);
      return res.run;
    },
    [props.runId],
    !ended,
  );
  if (got.error?.code === Code.NotFound) {
    return <NotFoundPage title="Run not found" message={`No run has the id ${props.runId}.`} />;
  }
  const run = got.data;
  if (!run) {
    return (
      <section>
        <RpcErrorBanner error={got.error} />
        <p class="muted">Loading run {props.runId}…</p>
      </section>
    );
  }
  return <RunView run={run} error={got.error} reload={got.reload} />;
}

function RunView(props: { run: Run; error: ConnectError | undefined; reload: () => void }) {
  const { run } = props;
  const now = Date.now();
  const output = valueJson(run.output);
  return (
    <section class="run-page">
      <div class="page-head">
        <h1>
          <Link href={`/functions/${run.appId}/${run.functionId}`}>{run.functionId}</Link>{" "}
          <StatusBadge status={run.status} />
        </h1>
        <RunActions run={run} reload={props.reload} />
      </div>
      <RpcErrorBanner error={props.error} />
      <dl class="facts">
        <div>
          <dt>Run</dt>
          <dd class="mono">{run.id}</dd>
        </div>
        <div>
          <dt>App</dt>
          <dd>{run.appId}</dd>
        </div>
        <div>
          <dt>Created</dt>
          <dd>{formatTime(dateOf(run.createdAt))}</dd>
        </div>
        <div>
          <dt>Started</dt>
          <dd>{formatTime(dateOf(run.startedAt))}</dd>
        </div>
        <div>
          <dt>Ended</dt>
          <dd>{formatTime(dateOf(run.endedAt))}</dd>
        </div>
        <div>
          <dt>Duration</dt>
          <dd>{runDuration(run, now)}</dd>
        </div>
        <div>
          <dt>Attempts</dt>
          <dd>{run.attempts}</dd>
        </div>
      </dl>
      <RunLinks run={run} />

      <h2>Timeline</h2>
      <Waterfall run={run} now={now} />

      {run.status === RunStatus.COMPLETED || output !== undefined ? (
        <>
          <h2>Output</h2>
          <JsonBlock value={output} label="Run output" />
        </>
      ) : null}
      {run.error ? (
        <>
          <h2>Error</h2>
          <ErrorDetailView error={run.error} />
        </>
      ) : null}

      <h2>Steps</h2>
      {run.steps.length === 0 ? <p class="muted">No step journaled yet.</p> : null}
      <div class="steps">
        {run.steps.map((s) => (
          <details class="step" id={`step-${s.key}`} data-step={s.key} key={s.key} open>
            <summary>
              <span class="mono">{s.key}</span>
              <span class="muted"> · attempt {s.attempt} · journaled {formatTime(dateOf(s.journaledAt))}</span>
              {s.invokedRunId ? (
                <>
                  {" · "}
                  <Link href={`/runs/${s.invokedRunId}`}>invoked run {shortId(s.invokedRunId)}</Link>
                </>
              ) : null}
            </summary>
            {s.error ? <ErrorDetailView error={s.error} /> : <JsonBlock value={valueJson(s.output)} label={`Output of ${s.key}`} />}
          </details>
        ))}
      </div>

      {run.failedAttempts.length > 0 ? (
        <>
          <h2>Failed attempts</h2>
          <div class="attempts">
            {run.failedAttempts.map((a) => (
              <div class="attempt" key={`${a.stepKey}:${a.attempt}`} data-attempt={`${a.stepKey}:${a.attempt}`}>
                <div class="attempt-head">
                  <span class="mono">{a.stepKey || "handler"}</span> · attempt {a.attempt} · failed {formatTime(dateOf(a.endedAt))} · retried{" "}
                  {formatTime(dateOf(a.retryAt))}
                </div>
                {a.error ? <ErrorDetailView error={a.error} /> : null}
              </div>
            ))}
          </div>
        </>
      ) : null}

      <h2>Event</h2>
      <dl class="facts">
        <div>
          <dt>Name</dt>
          <dd>{run.event?.name}</dd>
        </div>
        <div>
          <dt>Id</dt>
          <dd class="mono">
            <Link href={`/runs?event=${encodeURIComponent(run.event?.id ?? "")}`}>{run.event?.id}</Link>
          </dd>
        </div>
        <div>
          <dt>Time</dt>
          <dd>{formatTime(dateOf(run.event?.ts))}</dd>
        </div>
      </dl>
      <JsonBlock value={run.event?.data ?? {}} label="Event payload" />
    </section>
  );
}

/** Where the run came from and what came of it: rerun of, replayed from, invoked by, its reruns and replays. */
function RunLinks(props: { run: Run }) {
  const { run } = props;
  const links = [];
  if (run.originRunId && run.originStepKey) {
    links.push(
      <li key="replay">
        Replayed from <Link href={`/runs/${run.originRunId}`}>run {shortId(run.originRunId)}</Link> at step{" "}
        <span class="mono">{run.originStepKey}</span>
      </li>,
    );
  } else if (run.originRunId) {
    links.push(
      <li key="rerun">
        Rerun of <Link href={`/runs/${run.originRunId}`}>run {shortId(run.originRunId)}</Link>
      </li>,
    );
  }
  if (run.invokedByRunId) {
    links.push(
      <li key="invoked">
        Invoked by <Link href={`/runs/${run.invokedByRunId}`}>run {shortId(run.invokedByRunId)}</Link> at step{" "}
        <span class="mono">{run.invokedByStepKey}</span>
      </li>,
    );
  }
  if (run.derivedRunIds.length > 0) {
    links.push(
      <li key="derived">
        Rerun or replayed as{" "}
        {run.derivedRunIds.map((id, i) => (
          <span key={id}>
            {i > 0 ? ", " : ""}
            <Link href={`/runs/${id}`}>run {shortId(id)}</Link>
          </span>
        ))}
      </li>,
    );
  }
  if (links.length === 0) return null;
  return <ul class="run-links">{links}</ul>;
}

/** Cancel (with a reason), rerun, replay from a journaled step; each goes to the run it leaves or makes. */
function RunActions(props: { run: Run; reload: () => void }) {
  const { run } = props;
  const [busy, setBusy] = useState(false);
  const [failure, setFailure] = useState<ConnectError | undefined>();
  const [cancelling, setCancelling] = useState(false);
  const [reason, setReason] = useState("");
  const [fromStep, setFromStep] = useState("");
  const ended = hasEnded(run.status);

  const act = async (fn: () => Promise<void>) => {
    setBusy(true);
    setFailure(undefined);
    try {
      await fn();
    } catch (err) {
      setFailure(ConnectError.from(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <div class="actions">
      {!ended && !cancelling ? (
        <button type="button" class="danger" disabled={busy} onClick={() => setCancelling(true)}>
          Cancel run
        </button>
      ) : null}
      {cancelling && !ended ? (
        <form
          class="inline-form"
          onSubmit={(e) => {
            e.preventDefault();
            void act(async () => {
              await runs.cancelRun({ runId: run.id, reason: reason.trim() });
              setCancelling(false);
              props.reload();
            });
          }}
        >
          <input name="reason" placeholder="Reason (optional)" value={reason} onInput={(e) => setReason(e.currentTarget.value)} />
          <button type="submit" class="danger" disabled={busy}>
            Confirm cancel
          </button>
          <button type="button" class="secondary" onClick={() => setCancelling(false)}>
            Keep running
          </button>
        </form>
      ) : null}
      <button
        type="button"
        disabled={busy}
        onClick={() =>
          void act(async () => {
            const res = await runs.rerunRun({ runId: run.id });
            if (res.run) navigate(`/runs/${res.run.id}`);
          })
        }
      >
        Rerun
      </button>
      {ended && run.steps.length > 0 ? (
        <form
          class="inline-form"
          onSubmit={(e) => {
            e.preventDefault();
            void act(async () => {
              const res = await runs.replayRun({ runId: run.id, fromStep: fromStep || run.steps[0]!.key });
              if (res.run) navigate(`/runs/${res.run.id}`);
            });
          }}
        >
          <select name="fromStep" value={fromStep || run.steps[0]!.key} onChange={(e) => setFromStep(e.currentTarget.value)} aria-label="Step to replay from">
            {run.steps.map((s) => (
              <option value={s.key} key={s.key}>
                {s.key}
              </option>
            ))}
          </select>
          <button type="submit" disabled={busy}>
            Replay from step
          </button>
        </form>
      ) : null}
      {failure ? (
        <div class="banner banner-error" role="alert">
          {failure.rawMessage}
        </div>
      ) : null}
    </div>
  );
}
