// W3C Trace Context's traceparent, as the contract carries it
// (SendCall.trace_parent, EventRecord.trace_parent, StartRun.trace_parent,
// the `traceparent` header of Send): `00-<32 hex trace id>-<16 hex span
// id>-<2 hex flags>`. Parsed here so that the SDK and the services agree
// without either needing a propagator registered.

/** The parts of a traceparent. */
export interface TraceParent {
  traceId: string;
  spanId: string;
  /** Trace flags; bit 0 is "sampled". */
  flags: number;
}

const TRACE_PARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:-.*)?$/;

/**
 * Parses a traceparent; undefined when it is empty or malformed, or names
 * the invalid all-zero trace or span (a bad one is ignored, never an
 * error: tracing must not fail a call).
 */
export function parseTraceParent(text: string | undefined | null): TraceParent | undefined {
  if (!text) return undefined;
  const m = TRACE_PARENT.exec(text.trim().toLowerCase());
  if (!m) return undefined;
  const [, version, traceId, spanId, flags] = m as unknown as [string, string, string, string, string];
  // Version ff is invalid; a later version may add fields after these, which are ignored.
  if (version === "ff" || (version === "00" && text.trim().length !== 55)) return undefined;
  if (/^0+$/.test(traceId) || /^0+$/.test(spanId)) return undefined;
  return { traceId, spanId, flags: Number.parseInt(flags, 16) };
}

/** A traceparent's text, version 00. */
export function formatTraceParent(tp: TraceParent): string {
  return `00-${tp.traceId}-${tp.spanId}-${(tp.flags & 0xff).toString(16).padStart(2, "0")}`;
}
