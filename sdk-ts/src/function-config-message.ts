import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import {
  BatchEventsSchema,
  CancelOnSchema,
  ConcurrencySchema,
  ConcurrencyScope,
  CronTriggerSchema,
  DebounceSchema,
  EventTriggerSchema,
  FunctionConfigSchema,
  PrioritySchema,
  RateLimitSchema,
  SingletonMode,
  SingletonSchema,
  ThrottleSchema,
  TimeoutsSchema,
  TriggerSchema,
  type FunctionConfig,
} from "@stepwise/proto";
import type { StepwiseFunction } from "./function.js";

/** A function as the worker registers it: its config, validated when it was defined, in the contract's form. */
export function functionConfigMessage(fn: StepwiseFunction): FunctionConfig {
  return create(FunctionConfigSchema, {
    id: fn.config.id,
    name: fn.config.name ?? fn.config.id,
    triggers: fn.config.triggers.map((t) =>
      "cron" in t
        ? create(TriggerSchema, {
            kind: { case: "cron", value: create(CronTriggerSchema, { cron: t.cron, timezone: t.timezone ?? "" }) },
          })
        : create(TriggerSchema, {
            kind: { case: "event", value: create(EventTriggerSchema, { event: t.event, condition: t.if ?? "" }) },
          }),
    ),
    ...(fn.config.retries !== undefined ? { retries: fn.config.retries } : {}),
    onFailureFunctionId: fn.failureHandler?.config.id ?? "",
    cancelOn: (fn.runRules?.cancelOn ?? []).map((c) =>
      create(CancelOnSchema, {
        event: c.event,
        condition: c.condition,
        ...(c.timeoutMs !== undefined ? { timeout: durationFromMs(c.timeoutMs) } : {}),
      }),
    ),
    concurrency: (fn.runRules?.concurrency ?? []).map((c) =>
      create(ConcurrencySchema, {
        limit: c.limit,
        key: c.key,
        scope: c.scope === "app" ? ConcurrencyScope.APP : ConcurrencyScope.FUNCTION,
      }),
    ),
    ...(fn.runRules?.throttle
      ? {
          throttle: create(ThrottleSchema, {
            limit: fn.runRules.throttle.limit,
            period: durationFromMs(fn.runRules.throttle.periodMs),
            burst: fn.runRules.throttle.burst,
            key: fn.runRules.throttle.key,
          }),
        }
      : {}),
    ...(fn.runRules?.priority !== undefined ? { priority: create(PrioritySchema, { run: fn.runRules.priority }) } : {}),
    idempotency: fn.runRules?.idempotency ?? "",
    ...(fn.runRules?.rateLimit
      ? {
          rateLimit: create(RateLimitSchema, {
            limit: fn.runRules.rateLimit.limit,
            period: durationFromMs(fn.runRules.rateLimit.periodMs),
            key: fn.runRules.rateLimit.key,
          }),
        }
      : {}),
    ...(fn.runRules?.singleton
      ? {
          singleton: create(SingletonSchema, {
            key: fn.runRules.singleton.key,
            mode: fn.runRules.singleton.mode === "cancel" ? SingletonMode.CANCEL : SingletonMode.SKIP,
          }),
        }
      : {}),
    ...(fn.runRules?.debounce
      ? {
          debounce: create(DebounceSchema, {
            period: durationFromMs(fn.runRules.debounce.periodMs),
            key: fn.runRules.debounce.key,
            ...(fn.runRules.debounce.timeoutMs !== undefined ? { timeout: durationFromMs(fn.runRules.debounce.timeoutMs) } : {}),
          }),
        }
      : {}),
    ...(fn.runRules?.batchEvents
      ? {
          batchEvents: create(BatchEventsSchema, {
            maxSize: fn.runRules.batchEvents.maxSize,
            timeout: durationFromMs(fn.runRules.batchEvents.timeoutMs),
            key: fn.runRules.batchEvents.key,
          }),
        }
      : {}),
    ...(fn.runRules?.startMs !== undefined || fn.runRules?.finishMs !== undefined
      ? {
          timeouts: create(TimeoutsSchema, {
            ...(fn.runRules.startMs !== undefined ? { start: durationFromMs(fn.runRules.startMs) } : {}),
            ...(fn.runRules.finishMs !== undefined ? { finish: durationFromMs(fn.runRules.finishMs) } : {}),
          }),
        }
      : {}),
  });
}
