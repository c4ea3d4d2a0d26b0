import { context, ROOT_CONTEXT, type Attributes, type Context, type Span, SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import { formatTraceParent, parseTraceParent } from "@stepwise/proto";

// Traces: one per run, Send → scheduler → executor → each step attempt
// (the SDK's spans), continued through the W3C traceparent the contract
// carries (EventRecord.trace_parent, runs.trace_parent, StartRun.trace_parent).
// The services trace through @opentelemetry/api; startTracing registers an
// exporter only when the standard OTEL_* variables ask for one. Without
// one every span is the API's non-recording span, and a service hands on
// the traceparent it was given, so a trace crosses a service that does not
// export.

/** The services' tracer; a provider registered later (startTracing, a test's) takes over its spans. */
const tracer = trace.getTracer("stepwise");

/** The context whose parent is the span a traceparent names; the root context for none. */
export function contextOfTraceParent(traceParent: string | undefined | null): Context {
  const tp = parseTraceParent(traceParent);
  if (!tp) return ROOT_CONTEXT;
  return trace.setSpanContext(ROOT_CONTEXT, { traceId: tp.traceId, spanId: tp.spanId, traceFlags: tp.flags, isRemote: true });
}

/** A span of the services' traces. */
export type TraceSpan = Span;

/** A span and the traceparent to hand on for what follows it. */
export interface TracedSpan {
  span: Span;
  /** The span's traceparent when it records; otherwise the parent's as given ("" for none). */
  traceParent: string;
}

/**
 * Starts a span as the child of the span a traceparent names (a new
 * trace when there is none). The caller ends it.
 */
export function startSpanAfter(
  name: string,
  traceParent: string | undefined | null,
  attributes: Attributes,
  kind: "server" | "consumer" | "internal" = "internal",
): TracedSpan {
  const spanKind = kind === "server" ? SpanKind.SERVER : kind === "consumer" ? SpanKind.CONSUMER : SpanKind.INTERNAL;
  const span = tracer.startSpan(name, { kind: spanKind, attributes }, contextOfTraceParent(traceParent));
  // Not recording, the caller's traceparent is passed on as it came, and so only when it is one
  // (W3C: one that does not parse is ignored); any other text would reach the journal.
  return { span, traceParent: span.isRecording() ? traceParentOf(span) : traceParent && TRACEPARENT.test(traceParent) ? traceParent : "" };
}

/** A W3C traceparent: version, trace id, parent id, flags. */
const TRACEPARENT = /^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;

/** Ends a span, failed with `error` when given. */
export function endSpan(span: Span, error?: string): void {
  if (error !== undefined) span.setStatus({ code: SpanStatusCode.ERROR, message: error });
  span.end();
}

/** The traceparent of a span. */
export function traceParentOf(span: Span): string {
  const c = span.spanContext();
  return formatTraceParent({ traceId: c.traceId, spanId: c.spanId, flags: c.traceFlags });
}

/** Runs fn with a span active, so spans started inside it are its children. */
export function withSpan<T>(span: Span, fn: () => T): T {
  return context.with(trace.setSpan(context.active(), span), fn);
}

/**
 * Registers a tracer provider exporting over OTLP/HTTP when
 * OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set
 * (and neither OTEL_SDK_DISABLED=true nor OTEL_TRACES_EXPORTER=none); the
 * exporter reads the other OTEL_* variables itself. The service name is
 * OTEL_SERVICE_NAME, or stepwise-<service>. Returns what flushes and stops
 * it; nothing happens, and nothing is loaded, otherwise.
 */
export async function startTracing(service: string): Promise<() => Promise<void>> {
  // The exporter reads the same variables from the process's environment.
  const env = process.env;
  const endpoint = env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] || env["OTEL_EXPORTER_OTLP_ENDPOINT"];
  if (!endpoint || env["OTEL_SDK_DISABLED"] === "true" || env["OTEL_TRACES_EXPORTER"] === "none") return async () => {};
  const [{ NodeTracerProvider }, { BatchSpanProcessor }, { OTLPTraceExporter }, { resourceFromAttributes }] = await Promise.all([
    import("@opentelemetry/sdk-trace-node"),
    import("@opentelemetry/sdk-trace-base"),
    import("@opentelemetry/exporter-trace-otlp-http"),
    import("@opentelemetry/resources"),
  ]);
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ "service.name": env["OTEL_SERVICE_NAME"] || `stepwise-${service}` }),
    spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter())],
  });
  provider.register();
  return () => provider.shutdown();
}
