import {
  ID_PATTERN,
  MAX_BATCH_SIZE,
  MAX_CANCEL_ON,
  MAX_CONCURRENCY,
  MAX_CONCURRENCY_LIMITS,
  MAX_CONDITION_LENGTH,
  MAX_EVENT_NAME_LENGTH,
  MAX_ID_LENGTH,
} from "@stepwise/proto";
import { parseDuration } from "./duration.js";
import { matchCondition } from "./event-match.js";
import { deserializeError, NonRetriableError, type SerializedError } from "./errors.js";
import type {
  CronTrigger,
  EventSchemas,
  EventTrigger,
  FailureContext,
  FunctionConfig,
  Handler,
  OutgoingEventData,
  ReceivedEvent,
  RunRulesDeclared,
  StepwiseFunction,
} from "./function.js";
import { retryPolicy } from "./retry-policy.js";

// What Stepwise.createFunction makes of a declaration: the function a
// Worker registers, its config validated, its events checked against their
// schemas, and the function that runs its onFailure handler.

/** Id suffix of the function that runs a function's onFailure handler. */
const FAILURE_SUFFIX = "-on-failure";

/** The data of the "stepwise/run.failed" event that starts an onFailure run. */
interface FailedRunData {
  function_id: string;
  run_id: string;
  error: SerializedError;
  event: { id: string; name: string; data: Record<string, unknown>; ts: string };
}

function checkTrigger(t: unknown, where: string): void {
  if (typeof t !== "object" || t === null) throw new TypeError(`${where}: must be { event } or { cron }`);
  const o = t as Record<string, unknown>;
  if ("cron" in o) {
    if ("event" in o) throw new TypeError(`${where}: has both event and cron`);
    if (typeof o["cron"] !== "string" || o["cron"].trim() === "") throw new TypeError(`${where}.cron: must be a cron schedule`);
    if (o["timezone"] !== undefined && typeof o["timezone"] !== "string") throw new TypeError(`${where}.timezone: must be a string`);
    return;
  }
  if (typeof o["event"] !== "string" || o["event"].length === 0 || o["event"].length > MAX_EVENT_NAME_LENGTH) {
    throw new TypeError(`${where}.event: must be an event name of 1-${MAX_EVENT_NAME_LENGTH} characters`);
  }
  if (o["if"] !== undefined && (typeof o["if"] !== "string" || o["if"].trim() === "")) {
    throw new TypeError(`${where}.if: must be a CEL expression`);
  }
}

/** A positive duration of a declaration in ms. */
function positiveDuration(d: unknown, what: string): number {
  const ms = parseDuration(d as never, what);
  if (ms < 1) throw new TypeError(`${what}: must be at least 1 ms`);
  return ms;
}

/** A function's concurrency limits, validated (the key's CEL is checked at registration). */
function concurrencyLimits(where: string, concurrency: FunctionConfig["concurrency"]): RunRulesDeclared["concurrency"] {
  if (concurrency === undefined) return [];
  const list = typeof concurrency === "number" ? [{ limit: concurrency }] : Array.isArray(concurrency) ? concurrency : [concurrency];
  if (list.length > MAX_CONCURRENCY_LIMITS) throw new TypeError(`${where}: concurrency: at most ${MAX_CONCURRENCY_LIMITS} limits`);
  return list.map((c: unknown, i) => {
    const at = list === concurrency ? `${where}: concurrency[${i}]` : `${where}: concurrency`;
    if (typeof c !== "object" || c === null) throw new TypeError(`${at}: must be a number or { limit, key?, scope? }`);
    const { limit, key, scope } = c as Record<string, unknown>;
    if (typeof limit !== "number" || !Number.isInteger(limit) || limit < 1 || limit > MAX_CONCURRENCY) {
      throw new TypeError(`${at}.limit: must be an integer from 1 to ${MAX_CONCURRENCY}`);
    }
    if (scope !== undefined && scope !== "function" && scope !== "app") throw new TypeError(`${at}.scope: must be "function" or "app"`);
    return { limit, key: key === undefined ? "" : celText(key, `${at}.key`), scope: scope ?? "function" };
  });
}

/** A CEL expression of a declaration (compiled at registration). */
function celText(value: unknown, what: string): string {
  if (typeof value !== "string" || value.trim() === "" || value.length > MAX_CONDITION_LENGTH) {
    throw new TypeError(`${what}: must be a CEL expression of at most ${MAX_CONDITION_LENGTH} characters`);
  }
  return value;
}

/** A function's throttle, validated. */
function throttleRule(where: string, throttle: FunctionConfig["throttle"]): RunRulesDeclared["throttle"] {
  if (throttle === undefined) return undefined;
  const at = `${where}: throttle`;
  if (typeof throttle !== "object" || throttle === null) throw new TypeError(`${at}: must be { limit, period, burst?, key? }`);
  const { limit, period, burst, key } = throttle;
  if (typeof limit !== "number" || !Number.isInteger(limit) || limit < 1 || limit > MAX_CONCURRENCY) {
    throw new TypeError(`${at}.limit: must be an integer from 1 to ${MAX_CONCURRENCY}`);
  }
  if (burst !== undefined && (typeof burst !== "number" || !Number.isInteger(burst) || burst < 0 || burst > MAX_CONCURRENCY)) {
    throw new TypeError(`${at}.burst: must be an integer from 0 to ${MAX_CONCURRENCY}`);
  }
  return {
    limit,
    periodMs: positiveDuration(period, `${at}.period`),
    burst: burst ?? 0,
    key: key === undefined ? "" : celText(key, `${at}.key`),
  };
}

/** A function's rate limit, validated. */
function rateLimitRule(where: string, rateLimit: FunctionConfig["rateLimit"]): RunRulesDeclared["rateLimit"] {
  if (rateLimit === undefined) return undefined;
  const at = `${where}: rateLimit`;
  if (typeof rateLimit !== "object" || rateLimit === null) throw new TypeError(`${at}: must be { limit, period, key? }`);
  const { limit, period, key } = rateLimit;
  if (typeof limit !== "number" || !Number.isInteger(limit) || limit < 1 || limit > MAX_CONCURRENCY) {
    throw new TypeError(`${at}.limit: must be an integer from 1 to ${MAX_CONCURRENCY}`);
  }
  return { limit, periodMs: positiveDuration(period, `${at}.period`), key: key === undefined ? "" : celText(key, `${at}.key`) };
}

/** A function's singleton, validated. */
function singletonRule(where: string, singleton: FunctionConfig["singleton"]): RunRulesDeclared["singleton"] {
  if (singleton === undefined) return undefined;
  const at = `${where}: singleton`;
  if (typeof singleton !== "object" || singleton === null) throw new TypeError(`${at}: must be { key?, mode }`);
  if (singleton.mode !== "skip" && singleton.mode !== "cancel") throw new TypeError(`${at}.mode: must be "skip" or "cancel"`);
  return { key: singleton.key === undefined ? "" : celText(singleton.key, `${at}.key`), mode: singleton.mode };
}

/** A function's debounce, validated. */
function debounceRule(where: string, debounce: FunctionConfig["debounce"]): RunRulesDeclared["debounce"] {
  if (debounce === undefined) return undefined;
  const at = `${where}: debounce`;
  if (typeof debounce !== "object" || debounce === null) throw new TypeError(`${at}: must be { period, key?, timeout? }`);
  return {
    periodMs: positiveDuration(debounce.period, `${at}.period`),
    key: debounce.key === undefined ? "" : celText(debounce.key, `${at}.key`),
    ...(debounce.timeout !== undefined ? { timeoutMs: positiveDuration(debounce.timeout, `${at}.timeout`) } : {}),
  };
}

/** A function's batchEvents, validated. */
function batchRule(where: string, batch: FunctionConfig["batchEvents"]): RunRulesDeclared["batchEvents"] {
  if (batch === undefined) return undefined;
  const at = `${where}: batchEvents`;
  if (typeof batch !== "object" || batch === null) throw new TypeError(`${at}: must be { maxSize, timeout, key? }`);
  const { maxSize } = batch;
  if (typeof maxSize !== "number" || !Number.isInteger(maxSize) || maxSize < 1 || maxSize > MAX_BATCH_SIZE) {
    throw new TypeError(`${at}.maxSize: must be an integer from 1 to ${MAX_BATCH_SIZE}`);
  }
  return {
    maxSize,
    timeoutMs: positiveDuration(batch.timeout, `${at}.timeout`),
    key: batch.key === undefined ? "" : celText(batch.key, `${at}.key`),
  };
}

/** A function's priority, validated. */
function priorityRule(where: string, priority: FunctionConfig["priority"]): string | undefined {
  if (priority === undefined) return undefined;
  if (typeof priority !== "object" || priority === null) throw new TypeError(`${where}: priority: must be { run }`);
  return celText(priority.run, `${where}: priority.run`);
}

/** A function's cancelOn, timeouts and flow control, validated; undefined when it has none. */
function runRules(where: string, config: FunctionConfig): RunRulesDeclared | undefined {
  const { cancelOn, timeouts, concurrency, throttle, priority, idempotency, rateLimit, singleton, debounce, batchEvents } = config;
  if ([cancelOn, timeouts, concurrency, throttle, priority, idempotency, rateLimit, singleton, debounce, batchEvents].every((v) => v === undefined)) {
    return undefined;
  }
  if (debounce !== undefined && batchEvents !== undefined) throw new TypeError(`${where}: debounce: cannot be combined with batchEvents`);
  if (cancelOn !== undefined && (!Array.isArray(cancelOn) || cancelOn.length > MAX_CANCEL_ON)) {
    throw new TypeError(`${where}: cancelOn: must be a list of at most ${MAX_CANCEL_ON} rules`);
  }
  const rules = (cancelOn ?? []).map((c, i) => {
    const at = `${where}: cancelOn[${i}]`;
    if (typeof c !== "object" || c === null) throw new TypeError(`${at}: must be { event, match?, if?, timeout? }`);
    if (typeof c.event !== "string" || c.event.length === 0 || c.event.length > MAX_EVENT_NAME_LENGTH) {
      throw new TypeError(`${at}.event: must be an event name of 1-${MAX_EVENT_NAME_LENGTH} characters`);
    }
    return {
      event: c.event,
      condition: matchCondition(at, c),
      timeoutMs: c.timeout === undefined ? undefined : positiveDuration(c.timeout, `${at}.timeout`),
    };
  });
  if (timeouts !== undefined && (typeof timeouts !== "object" || timeouts === null)) {
    throw new TypeError(`${where}: timeouts: must be { start?, finish? }`);
  }
  return {
    cancelOn: rules,
    concurrency: concurrencyLimits(where, concurrency),
    throttle: throttleRule(where, throttle),
    priority: priorityRule(where, priority),
    idempotency: idempotency === undefined ? undefined : celText(idempotency, `${where}: idempotency`),
    rateLimit: rateLimitRule(where, rateLimit),
    singleton: singletonRule(where, singleton),
    debounce: debounceRule(where, debounce),
    batchEvents: batchRule(where, batchEvents),
    startMs: timeouts?.start === undefined ? undefined : positiveDuration(timeouts.start, `${where}: timeouts.start`),
    finishMs: timeouts?.finish === undefined ? undefined : positiveDuration(timeouts.finish, `${where}: timeouts.finish`),
  };
}

/** What a function definition needs of the client that defines it. */
export interface DefiningClient {
  appId: string;
  schemas: EventSchemas;
  /** Sends events with the client (step.sendEvent). */
  send: (events: readonly OutgoingEventData[]) => Promise<string[]>;
}

/**
 * Validates a function's declaration and builds it; see
 * Stepwise.createFunction. Throws a TypeError naming the function and the
 * field.
 */
export function defineFunction(
  config: FunctionConfig & {
    triggers: readonly (EventTrigger | CronTrigger)[];
    onFailure?: (ctx: FailureContext<ReceivedEvent>) => unknown;
  },
  handler: Handler<ReceivedEvent, unknown>,
  deps: DefiningClient,
): StepwiseFunction {
  const { onFailure, ...declared } = config;
  if (typeof declared.id !== "string" || !ID_PATTERN.test(declared.id)) {
    throw new TypeError(`function id ${JSON.stringify(declared.id)} must be 1-${MAX_ID_LENGTH} letters, digits, "-" or "_"`);
  }
  const where = `function ${declared.id}`;
  if (!Array.isArray(declared.triggers) || declared.triggers.length === 0) {
    throw new TypeError(`${where}: triggers: at least one trigger is required`);
  }
  declared.triggers.forEach((t, i) => checkTrigger(t, `${where}: triggers[${i}]`));
  retryPolicy(where, declared.retries, declared.backoff);
  const rules = runRules(where, declared);
  const schemas = deps.schemas;
  const parseEvent = (event: ReceivedEvent): ReceivedEvent => {
    const schema = schemas[event.name];
    if (!schema) return event;
    const parsed = schema.safeParse(event.data);
    if (!parsed.success) {
      throw new NonRetriableError(
        `event ${event.id} (${event.name}) does not match its schema: ${parsed.error.issues.map((i) => `${i.path.join(".") || "data"}: ${i.message}`).join("; ")}`,
      );
    }
    return { ...event, data: parsed.data as Record<string, unknown> };
  };
  let failureHandler: StepwiseFunction | undefined;
  if (onFailure !== undefined) {
    if (typeof onFailure !== "function") throw new TypeError(`${where}: onFailure: must be a function`);
    const id = `${declared.id}${FAILURE_SUFFIX}`;
    if (id.length > MAX_ID_LENGTH) {
      throw new TypeError(`${where}: id: at most ${MAX_ID_LENGTH - FAILURE_SUFFIX.length} characters with onFailure`);
    }
    failureHandler = {
      appId: deps.appId,
      config: {
        id,
        name: `${declared.name ?? declared.id} (onFailure)`,
        triggers: [],
        ...(declared.retries !== undefined ? { retries: declared.retries } : {}),
        ...(declared.backoff !== undefined ? { backoff: declared.backoff } : {}),
      },
      handlesFailuresOf: declared.id,
      parseEvent: (event) => event,
      sendEvents: deps.send,
      handler: async ({ event, step, runId }) => {
        const failed = event.data as unknown as FailedRunData;
        let original: ReceivedEvent = { ...failed.event, ts: new Date(failed.event.ts) };
        try {
          original = parseEvent(original);
        } catch {
          // The handler still gets the event as it was.
        }
        return onFailure({
          event: original as never,
          error: deserializeError(failed.error),
          failedRunId: failed.run_id,
          step,
          runId,
        });
      },
    };
  }
  return {
    appId: deps.appId,
    sendEvents: deps.send,
    config: declared as FunctionConfig,
    runRules: rules,
    failureHandler,
    handler: handler as unknown as Handler<ReceivedEvent, unknown>,
    parseEvent,
  };
}
