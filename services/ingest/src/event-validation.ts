import { Code, ConnectError } from "@connectrpc/connect";
import type { Event, EventRecord } from "@stepwise/proto";
import { create } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import {
  EventRecordSchema,
  MAX_EVENT_DATA_BYTES,
  MAX_EVENT_NAME_LENGTH,
  MAX_EVENTS_PER_SEND,
  MAX_SENT_EVENT_ID_LENGTH,
} from "@stepwise/proto";
import { v7 as uuidv7 } from "uuid";
import { z } from "zod";

const MIN_TS_MS = Date.parse("0001-01-01T00:00:00.000Z");
const MAX_TS_MS = Date.parse("9999-12-31T23:59:59.999Z");

/** Limits on what Send accepts: the contract's, from @stepwise/proto. */
export const EVENT_LIMITS = {
  maxEventsPerSend: MAX_EVENTS_PER_SEND,
  maxNameLength: MAX_EVENT_NAME_LENGTH,
  maxIdLength: MAX_SENT_EVENT_ID_LENGTH,
  maxDataBytes: MAX_EVENT_DATA_BYTES,
} as const;

/**
 * JSON that Postgres's jsonb refuses: an escaped NUL (\u0000) or lone
 * surrogate (JSON.stringify escapes those; well-formed pairs stay raw), not
 * preceded by an escaping backslash.
 */
const UNSTORABLE_JSON = /(?:^|[^\\])(?:\\\\)*\\u(?:0000|d[89a-f][0-9a-f]{2})/i;

const eventSchema = z.object({
  id: z
    .string()
    .max(EVENT_LIMITS.maxIdLength, `must be at most ${EVENT_LIMITS.maxIdLength} characters`)
    .regex(/^[\x21-\x7e]*$/, "must be printable ASCII without spaces"),
  name: z
    .string()
    .min(1, "must not be empty")
    .regex(/^[^\u0000]*$/, "must not contain a NUL character")
    // A lone surrogate cannot be stored: the event would be accepted and never reach the journal.
    .refine((n) => !/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(n), "must not contain a lone surrogate")
    .max(EVENT_LIMITS.maxNameLength, `must be at most ${EVENT_LIMITS.maxNameLength} characters`),
});

/**
 * Validates a Send request and turns its events into records for the event
 * stream: ids assigned where missing, data encoded once as JSON. Throws
 * INVALID_ARGUMENT naming the first offending event and field.
 */
export function toEventRecords(req: { readonly events: readonly Event[] }, now = Date.now()): EventRecord[] {
  const n = req.events.length;
  if (n === 0) throw new ConnectError("events: at least one event is required", Code.InvalidArgument);
  if (n > EVENT_LIMITS.maxEventsPerSend) {
    throw new ConnectError(
      `events: ${n} events in one call, at most ${EVENT_LIMITS.maxEventsPerSend} are accepted`,
      Code.InvalidArgument,
    );
  }
  const records: EventRecord[] = new Array(n);
  for (let i = 0; i < n; i++) {
    const ev = req.events[i]!;
    const checked = eventSchema.safeParse({ id: ev.id, name: ev.name });
    if (!checked.success) {
      const issue = checked.error.issues[0]!;
      throw new ConnectError(`events[${i}].${issue.path.join(".")}: ${issue.message}`, Code.InvalidArgument);
    }
    const dataJson = ev.data === undefined ? "{}" : JSON.stringify(ev.data);
    if (UNSTORABLE_JSON.test(dataJson)) {
      throw new ConnectError(
        `events[${i}].data: contains a NUL character or a lone surrogate, which cannot be stored`,
        Code.InvalidArgument,
      );
    }
    if (Buffer.byteLength(dataJson) > EVENT_LIMITS.maxDataBytes) {
      throw new ConnectError(
        `events[${i}].data: ${Buffer.byteLength(dataJson)} bytes encoded, at most ${EVENT_LIMITS.maxDataBytes} are accepted`,
        Code.InvalidArgument,
      );
    }
    const tsMs = ev.ts ? timestampMs(ev.ts) : now;
    // Years 1 to 9999: what RFC 3339 text, JavaScript dates and Postgres all hold.
    if (!Number.isFinite(tsMs) || tsMs < MIN_TS_MS || tsMs > MAX_TS_MS) {
      throw new ConnectError(`events[${i}].ts: must be between the years 0001 and 9999`, Code.InvalidArgument);
    }
    records[i] = create(EventRecordSchema, {
      id: ev.id || uuidv7(),
      name: ev.name,
      dataJson,
      tsMs: BigInt(tsMs),
      receivedAtMs: BigInt(now),
    });
  }
  return records;
}
