import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { type AwaitRecord, compileCondition, InvalidConditionError } from "@stepwise/core";
import {
  ID_PATTERN,
  MAX_AWAITS,
  MAX_EVENT_DATA_BYTES,
  MAX_EVENT_NAME_LENGTH,
  MAX_ID_LENGTH,
  MAX_STEP_KEY_LENGTH,
  MAX_SUSPEND_MS,
  type Suspend,
} from "@stepwise/proto";

/** An await the executor refuses; its step is journaled with this error. */
export interface InvalidAwait {
  stepKey: string;
  stepId: string;
  name: string;
  message: string;
}

/**
 * Reads what a suspending run waits for. A malformed message (no awaits,
 * keys missing or repeated) is a protocol error; an await whose content is
 * wrong (a condition that does not compile, a time too far away) is
 * returned as invalid, for its step to fail with a non-retriable error the
 * handler can catch: so is an invoke whose function id or data is malformed
 * (a function that is not registered is found out later, in the journal).
 */
export function parseAwaits(m: Suspend, nowMs: number): { awaits: AwaitRecord[]; invalid: InvalidAwait[] } {
  if (m.awaits.length === 0 || m.awaits.length > MAX_AWAITS) {
    throw new ConnectError(`suspend.awaits: must hold 1 to ${MAX_AWAITS} awaits`, Code.InvalidArgument);
  }
  const awaits: AwaitRecord[] = [];
  const invalid: InvalidAwait[] = [];
  const keys = new Set<string>();
  for (const a of m.awaits) {
    if (a.stepKey.length === 0 || a.stepKey.length > MAX_STEP_KEY_LENGTH || keys.has(a.stepKey)) {
      throw new ConnectError(`suspend.awaits: each needs a distinct step key of 1-${MAX_STEP_KEY_LENGTH} characters`, Code.InvalidArgument);
    }
    keys.add(a.stepKey);
    const bad = (message: string, name = "InvalidAwait") => invalid.push({ stepKey: a.stepKey, stepId: a.stepId, name, message });
    const due = (t: Parameters<typeof timestampMs>[0] | undefined, what: string): number | undefined => {
      if (!t) return void bad(`${what} is missing`);
      const ms = timestampMs(t);
      if (ms > nowMs + MAX_SUSPEND_MS) return void bad(`${what} is more than a year away`);
      return ms;
    };
    const k = a.kind;
    switch (k.case) {
      case "sleep": {
        const at = due(k.value.wakeAt, `step ${JSON.stringify(a.stepId)}: the sleep's end`);
        if (at !== undefined) awaits.push({ stepKey: a.stepKey, stepId: a.stepId, kind: "sleep", dueAtMs: at });
        break;
      }
      case "retry": {
        const at = due(k.value.retryAt, `step ${JSON.stringify(a.stepId)}: the retry time`);
        if (at !== undefined) awaits.push({ stepKey: a.stepKey, stepId: a.stepId, kind: "retry", dueAtMs: at });
        break;
      }
      case "waitForEvent": {
        const w = k.value;
        const at = due(w.timeoutAt, `step ${JSON.stringify(a.stepId)}: the wait's timeout`);
        if (at === undefined) break;
        if (w.event.length === 0 || w.event.length > MAX_EVENT_NAME_LENGTH) {
          bad(`step ${JSON.stringify(a.stepId)}: event must be an event name of 1-${MAX_EVENT_NAME_LENGTH} characters`);
          break;
        }
        let equality: AwaitRecord & { kind: "wait" } extends { equality: infer E } ? E : never = undefined;
        if (w.condition !== "") {
          try {
            equality = compileCondition(w.condition, ["event", "async"]).equality;
          } catch (err) {
            if (!(err instanceof InvalidConditionError)) throw err;
            bad(`step ${JSON.stringify(a.stepId)}: if: invalid CEL expression: ${err.message}`, "InvalidConditionError");
            break;
          }
        }
        awaits.push({
          stepKey: a.stepKey,
          stepId: a.stepId,
          kind: "wait",
          dueAtMs: at,
          event: w.event,
          condition: w.condition === "" ? null : w.condition,
          equality,
        });
        break;
      }
      case "invoke": {
        const v = k.value;
        const where = `step ${JSON.stringify(a.stepId)}`;
        const at = v.timeoutAt ? due(v.timeoutAt, `${where}: the invoke's timeout`) : null;
        if (at === undefined) break;
        const problem = invokeProblem(v.appId, v.functionId, v.dataJson);
        if (problem) {
          bad(`${where}: ${problem}`);
          break;
        }
        awaits.push({
          stepKey: a.stepKey,
          stepId: a.stepId,
          kind: "invoke",
          dueAtMs: at,
          appId: v.appId,
          functionId: v.functionId,
          dataJson: v.dataJson.trim() === "" ? "{}" : v.dataJson,
        });
        break;
      }
      default:
        bad(`step ${JSON.stringify(a.stepId)}: unknown kind of await`);
    }
  }
  return { awaits, invalid };
}

/**
 * JSON that Postgres's jsonb refuses: an escaped NUL (\u0000) or lone
 * surrogate, not preceded by an escaping backslash (as ingest checks event
 * data).
 */
const UNSTORABLE_JSON = /(?:^|[^\\])(?:\\\\)*\\u(?:0000|d[89a-f][0-9a-f]{2})/i;

/** What is wrong with an invoke's function and data, or undefined. */
function invokeProblem(appId: string, functionId: string, dataJson: string): string | undefined {
  if (!ID_PATTERN.test(appId)) return `invoke: app_id must be 1-${MAX_ID_LENGTH} letters, digits, "-" or "_"`;
  if (!ID_PATTERN.test(functionId)) return `invoke: function_id must be 1-${MAX_ID_LENGTH} letters, digits, "-" or "_"`;
  if (dataJson.trim() === "") return undefined;
  if (dataJson.length > MAX_EVENT_DATA_BYTES / 4 && Buffer.byteLength(dataJson) > MAX_EVENT_DATA_BYTES) {
    return `invoke: data is more than ${MAX_EVENT_DATA_BYTES} bytes of JSON`;
  }
  let data: unknown;
  try {
    data = JSON.parse(dataJson);
  } catch {
    return "invoke: data is not JSON";
  }
  if (typeof data !== "object" || data === null || Array.isArray(data)) return "invoke: data must be a JSON object";
  if (UNSTORABLE_JSON.test(dataJson)) return "invoke: data contains a NUL character or a lone surrogate";
  return undefined;
}
