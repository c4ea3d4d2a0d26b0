import { MAX_CONDITION_LENGTH } from "@stepwise/proto";

// How a declaration says which later event concerns a run (step.waitForEvent
// and a function's cancelOn): a CEL `if` over `event` (the run's event) and
// `async` (the candidate), a `match` field path, or both.

/** A dotted field path for `match`, as CEL selects it. */
const FIELD_PATH = /^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*$/;

/**
 * The CEL condition of `if` and `match` together ("" for neither): `match:
 * "data.orderId"` is `event.data.orderId == async.data.orderId`. Throws a
 * TypeError naming `where` for a value that is neither.
 */
export function matchCondition(where: string, options: { if?: unknown; match?: unknown }): string {
  const conditions: string[] = [];
  if (options.if !== undefined) {
    if (typeof options.if !== "string" || options.if.trim() === "") throw new TypeError(`${where}: if must be a CEL expression`);
    conditions.push(options.if);
  }
  if (options.match !== undefined) {
    if (typeof options.match !== "string" || !FIELD_PATH.test(options.match)) {
      throw new TypeError(`${where}: match must be a field path such as "data.orderId"`);
    }
    conditions.push(`event.${options.match} == async.${options.match}`);
  }
  const condition = conditions.length === 2 ? `(${conditions[0]}) && (${conditions[1]})` : (conditions[0] ?? "");
  if (condition.length > MAX_CONDITION_LENGTH) throw new TypeError(`${where}: the condition is over ${MAX_CONDITION_LENGTH} characters`);
  return condition;
}
