import { ID_PATTERN, MAX_CANCEL_ON, MAX_EVENT_NAME_LENGTH, MAX_ID_LENGTH } from "@stepwise/proto";
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

/** A function's cancelOn and timeouts, validated; undefined when it has neither. */
function runRules(where: string, config: FunctionConfig): RunRulesDeclared | undefined {
  const { cancelOn, timeouts } = config;
  if (cancelOn === undefined && timeouts === undefined) return undefined;
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
