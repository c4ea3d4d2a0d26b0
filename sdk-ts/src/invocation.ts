import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { ID_PATTERN, type Invoke, InvokeSchema, MAX_EVENT_DATA_BYTES, MAX_ID_LENGTH } from "@stepwise/proto";
import { parseDuration } from "./duration.js";
import { encodeOutput } from "./step-outcome.js";
import type { InvokeOptions } from "./step-tools.js";

// step.invoke's arguments, checked and turned into the Invoke await the run
// suspends on (see proto/README.md, "Invoking a function").

/**
 * The Invoke await of `step.invoke(id, options)` in a run of `ownAppId`,
 * with its timeout counted from `nowMs`. Throws a TypeError naming the step
 * and the field for an argument that cannot work.
 */
export function invokeAwait(id: string, options: InvokeOptions, ownAppId: string, nowMs: number): Invoke {
  const where = `step.invoke ${JSON.stringify(id)}`;
  if (typeof options !== "object" || options === null) throw new TypeError(`${where}: options must be { function, data?, timeout? }`);
  const { appId, functionId } = invokedFunction(options.function, ownAppId, where);
  let dataJson = "{}";
  if (options.data !== undefined) {
    const data: unknown = options.data;
    if (typeof data !== "object" || data === null || Array.isArray(data)) throw new TypeError(`${where}: data must be a JSON object`);
    dataJson = (encodeOutput(data, `${where}: data`) as { outputJson: string }).outputJson;
    if (dataJson.length > MAX_EVENT_DATA_BYTES / 4 && Buffer.byteLength(dataJson) > MAX_EVENT_DATA_BYTES) {
      throw new TypeError(`${where}: data is ${Buffer.byteLength(dataJson)} bytes of JSON, more than the ${MAX_EVENT_DATA_BYTES} allowed`);
    }
  }
  const timeoutMs = options.timeout === undefined ? undefined : parseDuration(options.timeout, `${where}: timeout`);
  return create(InvokeSchema, {
    appId,
    functionId,
    dataJson,
    ...(timeoutMs !== undefined ? { timeoutAt: timestampFromMs(nowMs + timeoutMs) } : {}),
  });
}

/** The app and id of the function `function` names. */
function invokedFunction(fn: unknown, ownAppId: string, where: string): { appId: string; functionId: string } {
  const bad = () =>
    new TypeError(
      `${where}: function must be a function made by createFunction, "function-id" or "app-id/function-id" (ids of 1-${MAX_ID_LENGTH} letters, digits, "-" or "_")`,
    );
  if (typeof fn === "string") {
    const parts = fn.split("/");
    const [appId, functionId] = parts.length === 1 ? [ownAppId, parts[0]] : parts;
    if (parts.length > 2 || !ID_PATTERN.test(appId ?? "") || !ID_PATTERN.test(functionId ?? "")) throw bad();
    return { appId: appId!, functionId: functionId! };
  }
  const f = fn as { appId?: unknown; config?: { id?: unknown } } | null;
  if (typeof f !== "object" || f === null || typeof f.appId !== "string" || typeof f.config?.id !== "string") throw bad();
  return { appId: f.appId, functionId: f.config.id };
}
