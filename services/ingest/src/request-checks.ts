import type { DescField, DescMessage } from "@bufbuild/protobuf";
import { type Timestamp, timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";

/**
 * Refuses a request any of whose strings holds a NUL character, which
 * Postgres cannot store or compare: INVALID_ARGUMENT naming the field (by
 * its proto name), before any query, instead of the database's refusal.
 */
export function refuseNul(schema: DescMessage, message: object, path = ""): void {
  const values = message as Record<string, unknown>;
  for (const field of schema.fields) {
    let value: unknown;
    if (field.oneof) {
      const o = values[field.oneof.localName] as { case?: string; value?: unknown } | undefined;
      if (o?.case !== field.localName) continue;
      value = o.value;
    } else {
      value = values[field.localName];
    }
    check(field, value, `${path}${field.name}`);
  }
}

function check(field: DescField, value: unknown, where: string): void {
  if (value === undefined || value === null) return;
  switch (field.fieldKind) {
    case "scalar":
      if (typeof value === "string") nul(value, where);
      return;
    case "message":
      refuseNul(field.message, value as object, `${where}.`);
      return;
    case "list":
      (value as unknown[]).forEach((v, i) => {
        if (typeof v === "string") nul(v, `${where}[${i}]`);
        else if (field.listKind === "message") refuseNul(field.message, v as object, `${where}[${i}].`);
      });
      return;
    case "map":
      for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
        nul(k, `${where} key`);
        if (typeof v === "string") nul(v, `${where}[${JSON.stringify(k.slice(0, 32))}]`);
        else if (field.mapKind === "message") refuseNul(field.message, v as object, `${where}.`);
      }
      return;
    default:
      return;
  }
}

function nul(s: string, where: string): void {
  if (s.includes("\u0000")) throw new ConnectError(`${where}: must not contain NUL characters`, Code.InvalidArgument);
}

/** The range of google.protobuf.Timestamp: 0001-01-01 to 9999-12-31, in seconds. */
const MIN_SECONDS = -62_135_596_800n;
const MAX_SECONDS = 253_402_300_799n;

/**
 * A time field of a request as a Date, or INVALID_ARGUMENT naming it when
 * it is outside the range a Timestamp may hold (which Postgres would refuse
 * or misread): undefined when unset.
 */
export function requestTime(ts: Timestamp | undefined, field: string): Date | undefined {
  if (!ts) return undefined;
  if (ts.seconds < MIN_SECONDS || ts.seconds > MAX_SECONDS || ts.nanos < 0 || ts.nanos > 999_999_999) {
    throw new ConnectError(`${field}: not a valid time (0001-01-01 to 9999-12-31, nanos 0 to 999,999,999)`, Code.InvalidArgument);
  }
  return timestampDate(ts);
}
