import { type Attributes, context, isSpanContextValid, ROOT_CONTEXT, SpanStatusCode, trace } from "@opentelemetry/api";
import { formatTraceParent, parseTraceParent } from "@stepwise/proto";
import { SDK_VERSION } from "./version.js";

// The SDK's part of a run's trace, through @opentelemetry/api alone: the
// app's own OpenTelemetry SDK, when it registers one, records the spans;
// without one they are the API's non-recording spans and cost next to
// nothing. Events sent carry the active span's traceparent; each step
// attempt is a span after the executor's (StartRun.trace_parent), active
// while the step body runs, so the app's spans inside it nest under it.

const tracer = trace.getTracer("@stepwise/sdk", SDK_VERSION);

/** The active span's traceparent, "" when there is none. */
export function activeTraceParent(): string {
  const span = trace.getActiveSpan();
  if (!span) return "";
  const c = span.spanContext();
  return isSpanContextValid(c) ? formatTraceParent({ traceId: c.traceId, spanId: c.spanId, flags: c.traceFlags }) : "";
}

/**
 * Runs a step body in its span, the child of the span a traceparent names,
 * active while the body runs. Without a tracer provider the span does not
 * record, and the body runs as it is: no context switch, and no frames of
 * the API in its errors' stacks.
 */
export async function inStepSpan<T>(traceParent: string, name: string, attributes: Attributes, body: () => Promise<T>): Promise<T> {
  const tp = parseTraceParent(traceParent);
  const parent = tp
    ? trace.setSpanContext(ROOT_CONTEXT, { traceId: tp.traceId, spanId: tp.spanId, traceFlags: tp.flags, isRemote: true })
    : context.active();
  const span = tracer.startSpan(name, { attributes }, parent);
  if (!span.isRecording()) return body();
  try {
    return await context.with(trace.setSpan(parent, span), body);
  } catch (err) {
    span.recordException(err instanceof Error ? err : String(err));
    span.setStatus({ code: SpanStatusCode.ERROR, message: err instanceof Error ? err.message : String(err) });
    throw err;
  } finally {
    span.end();
  }
}
