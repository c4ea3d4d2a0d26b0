import { describe, expect, expectTypeOf, it } from "vitest";
import { z } from "zod";
import { Stepwise } from "./client.js";

// Typed events: the trigger's event name picks the schema that types the
// handler's event.data and checks what send() accepts. These assertions are
// checked by the compiler (tsc -b compiles the tests) and at run time.
describe("typed events", () => {
  const stepwise = new Stepwise({
    appId: "typed",
    schemas: {
      "order.placed": z.object({ orderId: z.string(), total: z.number() }),
      "user.created": z.object({ email: z.string().email() }),
    },
  });

  it("types event.data from the trigger's schema", () => {
    stepwise.createFunction({ id: "typed-fn", triggers: [{ event: "order.placed" }] }, async ({ event }) => {
      expectTypeOf(event.data).toEqualTypeOf<{ orderId: string; total: number }>();
      expectTypeOf(event.name).toEqualTypeOf<"order.placed">();
      return event.data.orderId;
    });
    stepwise.createFunction({ id: "untyped-fn", triggers: [{ event: "no.schema" }] }, async ({ event }) => {
      expectTypeOf(event.data).toEqualTypeOf<Record<string, unknown>>();
    });
  });

  it("rejects data that does not match its schema before sending anything", async () => {
    await expect(
      // @ts-expect-error total must be a number
      stepwise.send({ name: "order.placed", data: { orderId: "o-1", total: "12" } }),
    ).rejects.toThrow(/total/);
    await expect(stepwise.send({ name: "user.created", data: { email: "not-an-email" } })).rejects.toThrow(/email/);
  });

  it("validates ids when functions are defined", () => {
    expect(() => stepwise.createFunction({ id: "bad id", triggers: [{ event: "x" }] }, () => null)).toThrow(/function id/);
    expect(() => stepwise.createFunction({ id: "ok", triggers: [] }, () => null)).toThrow(/at least one trigger/);
    expect(() => new Stepwise({ appId: "has.dot" })).toThrow(/appId/);
  });
});

describe("createFunction", () => {
  const stepwise = new Stepwise({ appId: "shop", schemas: { "order.placed": z.object({ orderId: z.string() }) } });
  const define = (config: Record<string, unknown>) => () => stepwise.createFunction(config as never, () => null);

  it("accepts event triggers with an if, and cron triggers with or without a time zone", () => {
    const fn = stepwise.createFunction(
      {
        id: "f",
        triggers: [{ event: "order.placed", if: "event.data.total > 100" }, { cron: "0 3 * * *" }, { cron: "0 9 * * 1", timezone: "Europe/Paris" }],
      },
      () => null,
    );
    expect(fn.config.triggers).toHaveLength(3);
    expect(fn.failureHandler).toBeUndefined();
  });

  it("rejects a trigger that cannot work, naming the function and the trigger", () => {
    expect(define({ id: "f", triggers: [null] })).toThrow(new TypeError("function f: triggers[0]: must be { event } or { cron }"));
    expect(define({ id: "f", triggers: [{ event: "e" }, { event: "e", cron: "* * * * *" }] })).toThrow(
      new TypeError("function f: triggers[1]: has both event and cron"),
    );
    expect(define({ id: "f", triggers: [{ cron: " " }] })).toThrow(new TypeError("function f: triggers[0].cron: must be a cron schedule"));
    expect(define({ id: "f", triggers: [{ cron: "* * * * *", timezone: 1 }] })).toThrow(
      new TypeError("function f: triggers[0].timezone: must be a string"),
    );
    expect(define({ id: "f", triggers: [{ event: "" }] })).toThrow(
      new TypeError("function f: triggers[0].event: must be an event name of 1-256 characters"),
    );
    expect(define({ id: "f", triggers: [{ event: "e", if: "" }] })).toThrow(new TypeError("function f: triggers[0].if: must be a CEL expression"));
  });

  it("rejects retries and backoff out of range", () => {
    expect(define({ id: "f", triggers: [{ event: "e" }], retries: 21 })).toThrow(
      new TypeError("function f: retries: must be an integer from 0 to 20"),
    );
    expect(define({ id: "f", triggers: [{ event: "e" }], backoff: { base: "1m", cap: "1s" } })).toThrow(
      new TypeError("function f: backoff.cap: must not be shorter than backoff.base"),
    );
  });

  it("takes cancelOn rules as CEL conditions and timeouts in milliseconds", () => {
    const fn = stepwise.createFunction(
      {
        id: "f",
        triggers: [{ event: "order.placed" }],
        cancelOn: [
          { event: "order.cancelled", match: "data.orderId", timeout: "7d" },
          { event: "order.refunded", if: "async.data.full", match: "data.orderId" },
          { event: "shop.closed" },
        ],
        timeouts: { start: "1m", finish: 90_000 },
      },
      () => null,
    );
    expect(fn.runRules).toEqual({
      cancelOn: [
        { event: "order.cancelled", condition: "event.data.orderId == async.data.orderId", timeoutMs: 7 * 86_400_000 },
        { event: "order.refunded", condition: "(async.data.full) && (event.data.orderId == async.data.orderId)", timeoutMs: undefined },
        { event: "shop.closed", condition: "", timeoutMs: undefined },
      ],
      concurrency: [],
      startMs: 60_000,
      finishMs: 90_000,
    });
    expect(stepwise.createFunction({ id: "g", triggers: [{ event: "e" }] }, () => null).runRules).toBeUndefined();
  });

  it("rejects cancelOn rules and timeouts that cannot work, naming the field", () => {
    const base = { id: "f", triggers: [{ event: "e" }] };
    expect(define({ ...base, cancelOn: {} })).toThrow(new TypeError("function f: cancelOn: must be a list of at most 8 rules"));
    expect(define({ ...base, cancelOn: Array.from({ length: 9 }, () => ({ event: "x" })) })).toThrow(
      new TypeError("function f: cancelOn: must be a list of at most 8 rules"),
    );
    expect(define({ ...base, cancelOn: [{ event: "" }] })).toThrow(
      new TypeError("function f: cancelOn[0].event: must be an event name of 1-256 characters"),
    );
    expect(define({ ...base, cancelOn: [{ event: "x", match: "data.a b" }] })).toThrow(
      new TypeError('function f: cancelOn[0]: match must be a field path such as "data.orderId"'),
    );
    expect(define({ ...base, cancelOn: [{ event: "x", if: " " }] })).toThrow(new TypeError("function f: cancelOn[0]: if must be a CEL expression"));
    expect(define({ ...base, cancelOn: [{ event: "x", timeout: "soon" }] })).toThrow(/^function f: cancelOn\[0\]\.timeout: "soon" is not a duration/);
    expect(define({ ...base, timeouts: { start: 0 } })).toThrow(new TypeError("function f: timeouts.start: must be at least 1 ms"));
    expect(define({ ...base, timeouts: { finish: "2y" } })).toThrow(/^function f: timeouts\.finish: "2y" is not a duration/);
    expect(define({ ...base, timeouts: "1h" })).toThrow(new TypeError("function f: timeouts: must be { start?, finish? }"));
  });

  it("takes concurrency as a number, a limit or two, a throttle and a priority", () => {
    const rules = (config: Record<string, unknown>) =>
      stepwise.createFunction({ id: "f", triggers: [{ event: "e" }], ...config } as never, () => null).runRules;
    expect(rules({ concurrency: 5 })?.concurrency).toEqual([{ limit: 5, key: "", scope: "function" }]);
    expect(rules({ concurrency: [{ limit: 2, key: "event.data.c" }, { limit: 9, scope: "app" }] })?.concurrency).toEqual([
      { limit: 2, key: "event.data.c", scope: "function" },
      { limit: 9, key: "", scope: "app" },
    ]);
    expect(rules({ throttle: { limit: 5, period: "1s" }, priority: { run: "event.data.p" } })).toMatchObject({
      throttle: { limit: 5, periodMs: 1_000, burst: 0, key: "" },
      priority: "event.data.p",
    });
    const base = { id: "f", triggers: [{ event: "e" }] };
    expect(define({ ...base, concurrency: 0 })).toThrow(new TypeError("function f: concurrency.limit: must be an integer from 1 to 10000"));
    expect(define({ ...base, concurrency: [{ limit: 1 }, { limit: 1 }, { limit: 1 }] })).toThrow(
      new TypeError("function f: concurrency: at most 2 limits"),
    );
    expect(define({ ...base, concurrency: [{ limit: 1, scope: "team" }] })).toThrow(
      new TypeError('function f: concurrency[0].scope: must be "function" or "app"'),
    );
    expect(define({ ...base, throttle: { limit: 1 } })).toThrow(/^function f: throttle\.period: /);
    expect(define({ ...base, throttle: { limit: 1, period: "1s", burst: -1 } })).toThrow(
      new TypeError("function f: throttle.burst: must be an integer from 0 to 10000"),
    );
    expect(define({ ...base, priority: { run: "" } })).toThrow(
      new TypeError("function f: priority.run: must be a CEL expression of at most 4096 characters"),
    );
  });

  it("takes a debounce or a batchEvents, and refuses both at once or out of range", () => {
    const rules = (config: Record<string, unknown>) =>
      stepwise.createFunction({ id: "f", triggers: [{ event: "e" }], ...config } as never, () => null).runRules;
    expect(rules({ debounce: { period: "500ms", key: "event.data.u", timeout: "5s" } })?.debounce).toEqual({
      periodMs: 500,
      key: "event.data.u",
      timeoutMs: 5_000,
    });
    expect(rules({ batchEvents: { maxSize: 10, timeout: "2s" } })?.batchEvents).toEqual({ maxSize: 10, timeoutMs: 2_000, key: "" });
    const base = { id: "f", triggers: [{ event: "e" }] };
    expect(define({ ...base, debounce: { period: "1s" }, batchEvents: { maxSize: 2, timeout: "1s" } })).toThrow(
      new TypeError("function f: debounce: cannot be combined with batchEvents"),
    );
    expect(define({ ...base, debounce: {} })).toThrow(/^function f: debounce\.period: /);
    expect(define({ ...base, batchEvents: { maxSize: 101, timeout: "1s" } })).toThrow(
      new TypeError("function f: batchEvents.maxSize: must be an integer from 1 to 100"),
    );
    expect(define({ ...base, batchEvents: { maxSize: 5 } })).toThrow(/^function f: batchEvents\.timeout: /);
  });

  it("with onFailure, adds the function <id>-on-failure, with no trigger and the same retries and backoff", () => {
    const fn = stepwise.createFunction(
      { id: "charge", name: "Charge", triggers: [{ event: "order.placed" }], retries: 2, backoff: { base: "5s" }, onFailure: () => "handled" },
      () => null,
    );
    const handler = fn.failureHandler;
    expect(handler?.appId).toBe("shop");
    expect(handler?.handlesFailuresOf).toBe("charge");
    expect(handler?.config).toEqual({ id: "charge-on-failure", name: "Charge (onFailure)", triggers: [], retries: 2, backoff: { base: "5s" } });
    // The onFailure config is not part of the function's own.
    expect(fn.config).not.toHaveProperty("onFailure");
  });

  it("rejects an onFailure that is not a function, or an id too long to add the suffix to", () => {
    expect(define({ id: "f", triggers: [{ event: "e" }], onFailure: "notify" })).toThrow(new TypeError("function f: onFailure: must be a function"));
    const long = "x".repeat(118);
    expect(define({ id: long, triggers: [{ event: "e" }], onFailure: () => null })).toThrow(
      new TypeError(`function ${long}: id: at most 117 characters with onFailure`),
    );
    expect(define({ id: "x".repeat(117), triggers: [{ event: "e" }], onFailure: () => null })).not.toThrow();
  });

  it("the onFailure handler receives the failed run's event, parsed, its error, and its id", async () => {
    let received: Record<string, unknown> | undefined;
    const fn = stepwise.createFunction(
      {
        id: "charge",
        triggers: [{ event: "order.placed" }],
        onFailure: ({ event, error, failedRunId, runId, step }) => {
          received = { event, error, failedRunId, runId, step };
          return { notified: event.data.orderId };
        },
      },
      () => null,
    );
    const step = {} as never;
    const failedEvent = {
      id: "stepwise-failed-run-9",
      name: "stepwise/run.failed",
      ts: new Date(),
      data: {
        function_id: "charge",
        run_id: "run-9",
        error: { name: "StepError", message: 'step "pay" failed: declined', cause: { name: "CardError", message: "declined" } },
        event: { id: "ev-1", name: "order.placed", data: { orderId: "o-1" }, ts: "2025-01-02T03:04:05.678Z" },
      },
    };
    const parsed = fn.failureHandler!.parseEvent(failedEvent);
    const out = await fn.failureHandler!.handler({ event: parsed, events: [parsed], step, runId: "run-10" });
    expect(out).toEqual({ notified: "o-1" });
    expect(received?.["event"]).toEqual({ id: "ev-1", name: "order.placed", data: { orderId: "o-1" }, ts: new Date("2025-01-02T03:04:05.678Z") });
    const error = received?.["error"] as Error;
    expect(error).toBeInstanceOf(Error);
    expect(error.name).toBe("StepError");
    expect(error.message).toBe('step "pay" failed: declined');
    expect((error.cause as Error).name).toBe("CardError");
    expect(received?.["failedRunId"]).toBe("run-9");
    expect(received?.["runId"]).toBe("run-10");
    expect(received?.["step"]).toBe(step);
  });

  it("the onFailure handler gets the event as it was when it no longer matches its schema", async () => {
    let data: unknown;
    const fn = stepwise.createFunction(
      { id: "charge", triggers: [{ event: "order.placed" }], onFailure: ({ event }) => void (data = event.data) },
      () => null,
    );
    const failed = {
      id: "x",
      name: "stepwise/run.failed",
      ts: new Date(),
      data: { function_id: "charge", run_id: "r", error: { name: "Error", message: "m" }, event: { id: "e", name: "order.placed", data: { orderId: 5 }, ts: "2025-01-01T00:00:00.000Z" } },
    };
    await fn.failureHandler!.handler({
      event: failed,
      events: [failed],
      step: {} as never,
      runId: "r2",
    });
    expect(data).toEqual({ orderId: 5 });
  });
});
