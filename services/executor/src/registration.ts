import { Code, ConnectError } from "@connectrpc/connect";
import { type Duration, durationMs } from "@bufbuild/protobuf/wkt";
import { quote } from "@stepwise/core";
import {
  compileCondition,
  compileExpression,
  CronSchedule,
  InvalidConditionError,
  InvalidCronError,
  type FunctionRegistration,
  type RunRules,
} from "@stepwise/core";
import {
  ConcurrencyScope,
  ID_PATTERN,
  MAX_BATCH_SIZE,
  MAX_CANCEL_ON,
  MAX_CONCURRENCY,
  MAX_CONCURRENCY_LIMITS,
  MAX_CAPACITY,
  MAX_CONDITION_LENGTH,
  MAX_ID_LENGTH,
  MAX_EVENT_NAME_LENGTH,
  MAX_RETRIES,
  MAX_SUSPEND_MS,
  SingletonMode,
  type FunctionConfig,
  type Register,
} from "@stepwise/proto";

/**
 * Validates a worker's registration and returns its functions in the form
 * the journal stores. Throws INVALID_ARGUMENT naming the function and field.
 */
export function validateRegistration(reg: Register): FunctionRegistration[] {
  if (!ID_PATTERN.test(reg.appId)) {
    throw new ConnectError(
      `register.app_id: ${quote(reg.appId)} must be 1-${MAX_ID_LENGTH} letters, digits, "-" or "_"`,
      Code.InvalidArgument,
    );
  }
  if (reg.capacity < 1 || reg.capacity > MAX_CAPACITY) {
    throw new ConnectError(`register.capacity: must be 1 to ${MAX_CAPACITY}`, Code.InvalidArgument);
  }
  if (reg.functions.length === 0) {
    throw new ConnectError("register.functions: at least one function is required", Code.InvalidArgument);
  }
  const seen = new Set<string>();
  const ids = new Set(reg.functions.map((f) => f.id));
  const failureHandlers = new Set(reg.functions.map((f) => f.onFailureFunctionId).filter((id) => id !== ""));
  const now = new Date();
  return reg.functions.map((fn) => {
    const where = `function ${JSON.stringify(fn.id)}`;
    const invalid = (field: string, message: string) => new ConnectError(`${where}: ${field}: ${message}`, Code.InvalidArgument);
    if (!ID_PATTERN.test(fn.id)) throw new ConnectError(`${where}: id must be 1-${MAX_ID_LENGTH} letters, digits, "-" or "_"`, Code.InvalidArgument);
    if (seen.has(fn.id)) throw new ConnectError(`${where}: registered twice`, Code.InvalidArgument);
    seen.add(fn.id);
    if (fn.retries !== undefined && fn.retries > MAX_RETRIES) throw invalid("retries", `must be 0 to ${MAX_RETRIES}`);
    if (fn.onFailureFunctionId !== "") {
      if (!ids.has(fn.onFailureFunctionId) || fn.onFailureFunctionId === fn.id) {
        throw invalid("on_failure_function_id", `${quote(fn.onFailureFunctionId)} must be another function of this registration`);
      }
    }
    // An onFailure handler runs only for failed runs: it needs no trigger.
    if (fn.triggers.length === 0 && !failureHandlers.has(fn.id)) throw invalid("triggers", "at least one is required");
    const events: string[] = [];
    const conditional: Array<{ event: string; condition: string }> = [];
    const crons: Array<{ cron: string; timezone: string; firstAt: Date }> = [];
    fn.triggers.forEach((t, i) => {
      if (t.kind.case === "event") {
        const { event, condition } = t.kind.value;
        if (event.length === 0 || event.length > MAX_EVENT_NAME_LENGTH) {
          throw invalid(`triggers[${i}].event`, `must be an event name of 1-${MAX_EVENT_NAME_LENGTH} characters`);
        }
        if (condition === "") {
          events.push(event);
          return;
        }
        try {
          compileCondition(condition, ["event"]);
        } catch (err) {
          if (err instanceof InvalidConditionError) throw invalid(`triggers[${i}].condition`, `invalid CEL expression: ${err.message}`);
          throw err;
        }
        conditional.push({ event, condition });
        return;
      }
      if (t.kind.case === "cron") {
        const { cron, timezone } = t.kind.value;
        let schedule: CronSchedule;
        try {
          schedule = new CronSchedule(cron, timezone);
        } catch (err) {
          if (err instanceof InvalidCronError) throw invalid(`triggers[${i}].cron`, `invalid cron schedule ${JSON.stringify(cron)}${timezone ? ` in ${JSON.stringify(timezone)}` : ""}: ${err.message}`);
          throw err;
        }
        const firstAt = schedule.nextAfter(now);
        if (!firstAt) throw invalid(`triggers[${i}].cron`, `${JSON.stringify(cron)} never fires`);
        crons.push({ cron, timezone, firstAt });
        return;
      }
      throw invalid(`triggers[${i}]`, "must be an event or a cron trigger");
    });
    const runRules = validateRunRules(fn, invalid);
    return {
      id: fn.id,
      name: fn.name || fn.id,
      ...(runRules.cancelOn.length > 0 ||
      runRules.startMs !== undefined ||
      runRules.finishMs !== undefined ||
      runRules.concurrency?.length ||
      runRules.throttle ||
      runRules.priority !== undefined ||
      runRules.admission ||
      runRules.window
        ? { runRules }
        : {}),
      eventTriggers: events,
      conditionalTriggers: conditional,
      cronTriggers: crons,
      config: {
        triggers: [
          ...events.map((event) => ({ event })),
          ...conditional.map((c) => ({ event: c.event, if: c.condition })),
          ...crons.map((c) => ({ cron: c.cron, ...(c.timezone ? { timezone: c.timezone } : {}) })),
        ],
        ...(fn.retries !== undefined ? { retries: fn.retries } : {}),
        ...(fn.onFailureFunctionId ? { onFailure: fn.onFailureFunctionId } : {}),
        ...(runRules.cancelOn.length > 0
          ? {
              cancelOn: runRules.cancelOn.map((c) => ({
                event: c.event,
                ...(c.condition !== null ? { if: c.condition } : {}),
                ...(c.timeoutMs !== undefined ? { timeoutMs: c.timeoutMs } : {}),
              })),
            }
          : {}),
        ...(runRules.concurrency?.length ? { concurrency: runRules.concurrency } : {}),
        ...(runRules.throttle ? { throttle: runRules.throttle } : {}),
        ...(runRules.priority !== undefined ? { priority: { run: runRules.priority } } : {}),
        ...(runRules.admission?.idempotency !== undefined ? { idempotency: runRules.admission.idempotency } : {}),
        ...(runRules.admission?.rateLimit ? { rateLimit: runRules.admission.rateLimit } : {}),
        ...(runRules.admission?.singleton ? { singleton: runRules.admission.singleton } : {}),
        ...(runRules.window ? windowConfig(runRules.window) : {}),
        ...(runRules.startMs !== undefined || runRules.finishMs !== undefined
          ? {
              timeouts: {
                ...(runRules.startMs !== undefined ? { startMs: runRules.startMs } : {}),
                ...(runRules.finishMs !== undefined ? { finishMs: runRules.finishMs } : {}),
              },
            }
          : {}),
      },
    };
  });
}

/** An event window as the stored config shows it: `debounce` or `batchEvents`, without the kind. */
function windowConfig(window: NonNullable<RunRules["window"]>): Record<string, unknown> {
  const { kind, ...rest } = window;
  return kind === "debounce" ? { debounce: rest } : { batchEvents: rest };
}

/** A duration of the config as milliseconds: 1 ms to MAX_SUSPEND_MS; undefined when unset. */
function durationOf(d: Duration | undefined, field: string, invalid: (field: string, message: string) => ConnectError): number | undefined {
  if (d === undefined) return undefined;
  const ms = durationMs(d);
  if (!Number.isFinite(ms) || ms < 1 || ms > MAX_SUSPEND_MS || d.nanos < 0 || d.seconds < 0n) {
    throw invalid(field, `must be a duration of 1 ms to ${MAX_SUSPEND_MS / 86_400_000} days`);
  }
  return Math.floor(ms);
}

/** A function's timeouts, cancelOn rules, flow control and event windows, validated; INVALID_ARGUMENT naming the field otherwise. */
function validateRunRules(fn: FunctionConfig, invalid: (field: string, message: string) => ConnectError): RunRules {
  if (fn.cancelOn.length > MAX_CANCEL_ON) throw invalid("cancel_on", `at most ${MAX_CANCEL_ON} rules`);
  const cancelOn = fn.cancelOn.map((c, i) => {
    if (c.event.length === 0 || c.event.length > MAX_EVENT_NAME_LENGTH) {
      throw invalid(`cancel_on[${i}].event`, `must be an event name of 1-${MAX_EVENT_NAME_LENGTH} characters`);
    }
    if (c.condition.length > MAX_CONDITION_LENGTH) throw invalid(`cancel_on[${i}].condition`, `at most ${MAX_CONDITION_LENGTH} characters`);
    let equality: RunRules["cancelOn"][number]["equality"];
    if (c.condition !== "") {
      try {
        equality = compileCondition(c.condition, ["event", "async"]).equality;
      } catch (err) {
        if (err instanceof InvalidConditionError) throw invalid(`cancel_on[${i}].condition`, `invalid CEL expression: ${err.message}`);
        throw err;
      }
    }
    return {
      event: c.event,
      condition: c.condition === "" ? null : c.condition,
      equality,
      timeoutMs: durationOf(c.timeout, `cancel_on[${i}].timeout`, invalid),
    };
  });
  /** A CEL expression over the event (a key, a priority); INVALID_ARGUMENT naming the field otherwise. */
  const expression = (source: string, field: string) => {
    if (source.length > MAX_CONDITION_LENGTH) throw invalid(field, `at most ${MAX_CONDITION_LENGTH} characters`);
    try {
      compileExpression(source, ["event"]);
    } catch (err) {
      if (err instanceof InvalidConditionError) throw invalid(field, `invalid CEL expression: ${err.message}`);
      throw err;
    }
  };
  if (fn.concurrency.length > MAX_CONCURRENCY_LIMITS) throw invalid("concurrency", `at most ${MAX_CONCURRENCY_LIMITS} limits`);
  const concurrency = fn.concurrency.map((c, i) => {
    if (c.limit < 1 || c.limit > MAX_CONCURRENCY) throw invalid(`concurrency[${i}].limit`, `must be 1 to ${MAX_CONCURRENCY}`);
    if (c.key !== "") expression(c.key, `concurrency[${i}].key`);
    const scope: "function" | "app" = c.scope === ConcurrencyScope.APP ? "app" : "function";
    if (c.scope !== ConcurrencyScope.APP && c.scope !== ConcurrencyScope.FUNCTION && c.scope !== ConcurrencyScope.UNSPECIFIED) {
      throw invalid(`concurrency[${i}].scope`, "must be FUNCTION or APP");
    }
    return { limit: c.limit, key: c.key, scope };
  });
  let throttle: RunRules["throttle"];
  if (fn.throttle) {
    const t = fn.throttle;
    if (t.limit < 1 || t.limit > MAX_CONCURRENCY) throw invalid("throttle.limit", `must be 1 to ${MAX_CONCURRENCY}`);
    if (t.burst > MAX_CONCURRENCY) throw invalid("throttle.burst", `must be 0 to ${MAX_CONCURRENCY}`);
    const periodMs = durationOf(t.period, "throttle.period", invalid);
    if (periodMs === undefined) throw invalid("throttle.period", "required");
    if (t.key !== "") expression(t.key, "throttle.key");
    throttle = { limit: t.limit, periodMs, burst: t.burst, key: t.key };
  }
  let priority: string | undefined;
  if (fn.priority) {
    if (fn.priority.run === "") throw invalid("priority.run", "must be a CEL expression");
    expression(fn.priority.run, "priority.run");
    priority = fn.priority.run;
  }
  const admission: NonNullable<RunRules["admission"]> = {};
  if (fn.idempotency !== "") {
    expression(fn.idempotency, "idempotency");
    admission.idempotency = fn.idempotency;
  }
  if (fn.rateLimit) {
    const r = fn.rateLimit;
    if (r.limit < 1 || r.limit > MAX_CONCURRENCY) throw invalid("rate_limit.limit", `must be 1 to ${MAX_CONCURRENCY}`);
    const periodMs = durationOf(r.period, "rate_limit.period", invalid);
    if (periodMs === undefined) throw invalid("rate_limit.period", "required");
    if (r.key !== "") expression(r.key, "rate_limit.key");
    admission.rateLimit = { limit: r.limit, periodMs, key: r.key };
  }
  if (fn.singleton) {
    const g = fn.singleton;
    if (g.key !== "") expression(g.key, "singleton.key");
    if (![SingletonMode.UNSPECIFIED, SingletonMode.SKIP, SingletonMode.CANCEL].includes(g.mode)) {
      throw invalid("singleton.mode", "must be SKIP or CANCEL");
    }
    admission.singleton = { key: g.key, mode: g.mode === SingletonMode.CANCEL ? "cancel" : "skip" };
  }
  let window: RunRules["window"];
  if (fn.debounce && fn.batchEvents) throw invalid("debounce", "cannot be combined with batch_events");
  if (fn.debounce) {
    const d = fn.debounce;
    const periodMs = durationOf(d.period, "debounce.period", invalid);
    if (periodMs === undefined) throw invalid("debounce.period", "required");
    if (d.key !== "") expression(d.key, "debounce.key");
    const timeoutMs = durationOf(d.timeout, "debounce.timeout", invalid);
    window = { kind: "debounce", periodMs, key: d.key, ...(timeoutMs !== undefined ? { timeoutMs } : {}) };
  }
  if (fn.batchEvents) {
    const b = fn.batchEvents;
    if (b.maxSize < 1 || b.maxSize > MAX_BATCH_SIZE) throw invalid("batch_events.max_size", `must be 1 to ${MAX_BATCH_SIZE}`);
    const timeoutMs = durationOf(b.timeout, "batch_events.timeout", invalid);
    if (timeoutMs === undefined) throw invalid("batch_events.timeout", "required");
    if (b.key !== "") expression(b.key, "batch_events.key");
    window = { kind: "batch", maxSize: b.maxSize, timeoutMs, key: b.key };
  }
  return {
    ...(window ? { window } : {}),
    ...(Object.keys(admission).length > 0 ? { admission } : {}),
    startMs: durationOf(fn.timeouts?.start, "timeouts.start", invalid),
    finishMs: durationOf(fn.timeouts?.finish, "timeouts.finish", invalid),
    cancelOn,
    ...(concurrency.length > 0 ? { concurrency } : {}),
    ...(throttle ? { throttle } : {}),
    ...(priority !== undefined ? { priority } : {}),
  };
}
