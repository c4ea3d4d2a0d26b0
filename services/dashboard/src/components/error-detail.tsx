import type { ConnectError } from "@connectrpc/connect";
import { Code } from "@connectrpc/connect";
import type { ErrorDetail } from "@stepwise/proto";

/** An error a step, an attempt or a run failed with: name, message, stack, and each cause below it. */
export function ErrorDetailView(props: { error: ErrorDetail }) {
  const e = props.error;
  return (
    <div class="error-detail">
      <div class="error-head">
        <strong>{e.name || "Error"}</strong>
        {e.nonRetriable ? <span class="tag">non-retriable</span> : null}
        <span class="error-message">{e.message}</span>
      </div>
      {e.stack ? <pre class="stack">{e.stack}</pre> : null}
      {e.cause ? (
        <div class="cause">
          <div class="cause-label">caused by</div>
          <ErrorDetailView error={e.cause} />
        </div>
      ) : null}
    </div>
  );
}

/** An RPC that failed, as a banner above the page. */
export function RpcErrorBanner(props: { error: ConnectError | undefined }) {
  if (!props.error) return null;
  const unavailable = props.error.code === Code.Unavailable || props.error.code === Code.Unknown;
  return (
    <div class="banner banner-error" role="alert">
      {unavailable ? "The engine did not answer: " : ""}
      {props.error.rawMessage || props.error.message} <span class="muted">({Code[props.error.code]})</span>
    </div>
  );
}
