import { createHash } from "node:crypto";
import type { WaitEvent } from "../journal/wait-store.js";
import type { Logger } from "../runtime/log.js";
import { compileExpression, type Expression } from "./cel-condition.js";
import { conditionEvent } from "./wait-matching.js";

// The value of a flow control key (concurrency, throttle, rate limit,
// idempotency, singleton, debounce, batchEvents): a CEL expression over
// the event, as text.

/** Longest key value kept as it is; a longer one is replaced by its hash. */
const MAX_KEY_VALUE_LENGTH = 200;

/** A key expression's value as text: strings as they are, other scalars as CEL prints them. */
function keyText(v: unknown): string {
  if (typeof v === "string") return v;
  if (typeof v === "number" || typeof v === "bigint" || typeof v === "boolean") return String(v);
  if (v === null || v === undefined) return "null";
  try {
    return JSON.stringify(v, (_k, x: unknown) => (typeof x === "bigint" ? x.toString() : x));
  } catch {
    return String(v);
  }
}

/**
 * The value of a key expression over an event: "" when there is no
 * expression or it fails to evaluate (the event then takes the empty key),
 * a hash when it is longer than 200 characters.
 */
export function flowKeyValue(source: string, event: WaitEvent, compile: (source: string) => Expression, log?: Logger): string {
  if (source === "") return "";
  let value = "";
  try {
    value = keyText(compile(source).evaluate({ event: conditionEvent(event) }));
  } catch (err) {
    log?.debug({ err, event: event.id, key: source }, "a flow control key could not be evaluated; the event takes the empty key");
  }
  return value.length > MAX_KEY_VALUE_LENGTH ? `sha256:${createHash("sha256").update(value).digest("hex")}` : value;
}

/** Expressions over `event`, compiled once each (they were checked at registration). */
export class ExpressionCache {
  private readonly compiled = new Map<string, Expression>();

  get(source: string): Expression {
    let c = this.compiled.get(source);
    if (!c) {
      c = compileExpression(source, ["event"]);
      this.compiled.set(source, c);
    }
    return c;
  }
}
