import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { RegisterSchema, type FunctionConfigSchema } from "@stepwise/proto";
import { describe, expect, it } from "vitest";
import { MAX_CAPACITY, MAX_RETRIES } from "@stepwise/proto";
import { validateRegistration } from "./registration.js";

type FunctionInit = MessageInitShape<typeof FunctionConfigSchema>;

const fn = (id: string, ...events: string[]): FunctionInit => ({
  id,
  triggers: events.map((event) => ({ kind: { case: "event", value: { event } } })),
});

function register(over: { appId?: string; capacity?: number; functions?: FunctionInit[] } = {}) {
  return create(RegisterSchema, {
    appId: "shop",
    workerId: "w-1",
    capacity: 10,
    sdk: "@stepwise/sdk/0.1.0",
    functions: [fn("order-processing", "order.placed")],
    ...over,
  });
}

function expectInvalid(reg: ReturnType<typeof register>, message: string): void {
  let caught: unknown;
  try {
    validateRegistration(reg);
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(ConnectError);
  const err = caught as ConnectError;
  expect(err.code).toBe(Code.InvalidArgument);
  expect(err.rawMessage).toBe(message);
}

describe("validateRegistration", () => {
  it("accepts a good registration and maps its triggers", () => {
    const out = validateRegistration(
      register({
        functions: [
          { ...fn("order-processing", "order.placed", "order.retried"), name: "Order processing", retries: 4 },
          fn("send_email-2", "email.requested"),
        ],
      }),
    );
    expect(out).toEqual([
      {
        id: "order-processing",
        name: "Order processing",
        eventTriggers: ["order.placed", "order.retried"],
        conditionalTriggers: [],
        cronTriggers: [],
        config: { triggers: [{ event: "order.placed" }, { event: "order.retried" }], retries: 4 },
      },
      {
        id: "send_email-2",
        name: "send_email-2",
        eventTriggers: ["email.requested"],
        conditionalTriggers: [],
        cronTriggers: [],
        config: { triggers: [{ event: "email.requested" }] },
      },
    ]);
  });

  it("keeps retries set to 0 and leaves unset retries out", () => {
    const [zero, unset] = validateRegistration(
      register({ functions: [{ ...fn("a", "e"), retries: 0 }, fn("b", "e")] }),
    );
    expect(zero?.config).toEqual({ triggers: [{ event: "e" }], retries: 0 });
    expect(unset?.config).not.toHaveProperty("retries");
  });

  it("accepts capacity 1 and the maximum, and event names of 256 characters", () => {
    expect(validateRegistration(register({ capacity: 1 }))).toHaveLength(1);
    expect(validateRegistration(register({ capacity: MAX_CAPACITY }))).toHaveLength(1);
    const [f] = validateRegistration(register({ functions: [fn("f", "e".repeat(256))] }));
    expect(f?.eventTriggers).toEqual(["e".repeat(256)]);
  });

  describe("rejects with INVALID_ARGUMENT", () => {
    it("an empty app id", () => {
      expectInvalid(register({ appId: "" }), 'register.app_id: "" must be 1-128 letters, digits, "-" or "_"');
    });

    it("an app id with a forbidden character or too long", () => {
      expectInvalid(register({ appId: "my app" }), 'register.app_id: "my app" must be 1-128 letters, digits, "-" or "_"');
      // Quoted to 64 characters: a reply never echoes input of any length.
      expectInvalid(register({ appId: "a".repeat(129) }), `register.app_id: "${"a".repeat(64)}"… (129 characters) must be 1-128 letters, digits, "-" or "_"`);
    });

    it("capacity 0", () => {
      expectInvalid(register({ capacity: 0 }), "register.capacity: must be 1 to 10000");
    });

    it("capacity 10,001", () => {
      expectInvalid(register({ capacity: 10_001 }), "register.capacity: must be 1 to 10000");
    });

    it("no functions", () => {
      expectInvalid(register({ functions: [] }), "register.functions: at least one function is required");
    });

    it("duplicate function ids", () => {
      expectInvalid(register({ functions: [fn("a", "e"), fn("b", "e"), fn("a", "f")] }), 'function "a": registered twice');
    });

    it("a bad function id", () => {
      expectInvalid(register({ functions: [fn("a", "e"), fn("bad id", "e")] }), 'function "bad id": id must be 1-128 letters, digits, "-" or "_"');
      expectInvalid(register({ functions: [fn("", "e")] }), 'function "": id must be 1-128 letters, digits, "-" or "_"');
    });

    it("a function with no triggers", () => {
      expectInvalid(register({ functions: [fn("a", "e"), fn("lonely")] }), 'function "lonely": triggers: at least one is required');
    });

    it("an empty event name", () => {
      expectInvalid(register({ functions: [fn("f", "e", "")] }), 'function "f": triggers[1].event: must be an event name of 1-256 characters');
    });

    it("an event name over 256 characters", () => {
      expectInvalid(register({ functions: [fn("f", "e".repeat(257))] }), 'function "f": triggers[0].event: must be an event name of 1-256 characters');
    });

    it("a trigger of no kind", () => {
      expectInvalid(register({ functions: [{ id: "f", triggers: [{}] }] }), 'function "f": triggers[0]: must be an event or a cron trigger');
    });
  });
});

describe("validateRegistration of conditions, crons and onFailure", () => {
  const trigger = {
    event: (event: string, condition = "") => ({ kind: { case: "event" as const, value: { event, condition } } }),
    cron: (cron: string, timezone = "") => ({ kind: { case: "cron" as const, value: { cron, timezone } } }),
  };

  function invalidMessage(reg: ReturnType<typeof register>): string {
    let caught: unknown;
    try {
      validateRegistration(reg);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(ConnectError);
    expect((caught as ConnectError).code).toBe(Code.InvalidArgument);
    return (caught as ConnectError).rawMessage;
  }

  /** The first tick at or after now of a yearly time, in ms. */
  function nextYearly(month: number, day: number, hourUtc: number): number {
    const year = new Date().getUTCFullYear();
    const thisYear = Date.UTC(year, month, day, hourUtc);
    return thisYear > Date.now() ? thisYear : Date.UTC(year + 1, month, day, hourUtc);
  }

  it("keeps event conditions apart from plain triggers and in the config as `if`", () => {
    const [f] = validateRegistration(
      register({
        functions: [
          {
            id: "big-orders",
            triggers: [trigger.event("order.placed", "event.data.total > 100"), trigger.event("order.updated"), trigger.event("order.placed", "event.data.vip")],
          },
        ],
      }),
    );
    expect(f).toEqual({
      id: "big-orders",
      name: "big-orders",
      eventTriggers: ["order.updated"],
      conditionalTriggers: [
        { event: "order.placed", condition: "event.data.total > 100" },
        { event: "order.placed", condition: "event.data.vip" },
      ],
      cronTriggers: [],
      config: {
        triggers: [
          { event: "order.updated" },
          { event: "order.placed", if: "event.data.total > 100" },
          { event: "order.placed", if: "event.data.vip" },
        ],
      },
    });
  });

  it("rejects a condition that does not compile, naming the trigger", () => {
    const message = invalidMessage(register({ functions: [{ id: "f", triggers: [trigger.event("e"), trigger.event("e", "event.data.total >")] }] }));
    expect(message).toMatch(/^function "f": triggers\[1\].condition: invalid CEL expression: .+/);
  });

  it("rejects a condition on anything but the event, such as async, which only a wait has", () => {
    expect(invalidMessage(register({ functions: [{ id: "f", triggers: [trigger.event("e", "async.data.id == event.data.id")] }] }))).toBe(
      'function "f": triggers[0].condition: invalid CEL expression: unknown variable "async": the expression may use `event`',
    );
    expect(invalidMessage(register({ functions: [{ id: "f", triggers: [trigger.event("e", "   ")] }] }))).toBe(
      'function "f": triggers[0].condition: invalid CEL expression: the expression is empty',
    );
  });

  it("accepts cron triggers with the first tick after now, in their time zone", () => {
    const before = Date.now();
    const [f] = validateRegistration(
      register({
        functions: [
          {
            id: "yearly",
            triggers: [trigger.cron("0 0 1 1 *", "Europe/Paris"), trigger.cron("0 12 1 7 *"), trigger.cron("*/10 * * * * *", "UTC")],
          },
        ],
      }),
    );
    expect(f?.eventTriggers).toEqual([]);
    expect(f?.conditionalTriggers).toEqual([]);
    const crons = f?.cronTriggers ?? [];
    expect(crons.map((c) => ({ cron: c.cron, timezone: c.timezone }))).toEqual([
      { cron: "0 0 1 1 *", timezone: "Europe/Paris" },
      { cron: "0 12 1 7 *", timezone: "" },
      { cron: "*/10 * * * * *", timezone: "UTC" },
    ]);
    // Midnight of January 1st in Paris is 23:00 UTC on December 31st; an empty time zone is UTC.
    expect(crons[0]?.firstAt.getTime()).toBe(nextYearly(11, 31, 23));
    expect(crons[1]?.firstAt.getTime()).toBe(nextYearly(6, 1, 12));
    // Six fields: seconds first.
    const tenSeconds = crons[2]!.firstAt.getTime();
    expect(tenSeconds % 10_000).toBe(0);
    expect(tenSeconds).toBeGreaterThan(before - 1000);
    expect(tenSeconds).toBeLessThanOrEqual(Date.now() + 10_000);
    expect(f?.config).toEqual({
      triggers: [{ cron: "0 0 1 1 *", timezone: "Europe/Paris" }, { cron: "0 12 1 7 *" }, { cron: "*/10 * * * * *", timezone: "UTC" }],
    });
  });

  it("rejects a cron pattern that does not parse", () => {
    for (const cron of ["61 * * * *", "* * * *", "0 0 0 1 1 * 2030", "every day", ""]) {
      expect(invalidMessage(register({ functions: [{ id: "f", triggers: [trigger.cron(cron)] }] }))).toMatch(
        new RegExp(`^function "f": triggers\\[0\\]\\.cron: invalid cron schedule ${JSON.stringify(cron).replace(/[*]/g, "\\*")}: .+`),
      );
    }
  });

  it("rejects an unknown time zone, naming it", () => {
    const message = invalidMessage(register({ functions: [{ id: "f", triggers: [trigger.event("e"), trigger.cron("0 9 * * 1", "Mars/Olympus")] }] }));
    expect(message.startsWith('function "f": triggers[1].cron: invalid cron schedule "0 9 * * 1" in "Mars/Olympus": ')).toBe(true);
  });

  it("rejects a schedule that never fires", () => {
    expect(invalidMessage(register({ functions: [{ id: "f", triggers: [trigger.cron("0 0 31 2 *")] }] }))).toBe(
      'function "f": triggers[0].cron: "0 0 31 2 *" never fires',
    );
  });

  it("accepts an onFailure handler of the same registration, which needs no trigger", () => {
    const out = validateRegistration(
      register({
        functions: [
          { ...fn("charge", "order.placed"), onFailureFunctionId: "charge-on-failure", retries: 2 },
          { id: "charge-on-failure", name: "Charge (onFailure)", triggers: [] },
        ],
      }),
    );
    expect(out).toEqual([
      {
        id: "charge",
        name: "charge",
        eventTriggers: ["order.placed"],
        conditionalTriggers: [],
        cronTriggers: [],
        config: { triggers: [{ event: "order.placed" }], retries: 2, onFailure: "charge-on-failure" },
      },
      {
        id: "charge-on-failure",
        name: "Charge (onFailure)",
        eventTriggers: [],
        conditionalTriggers: [],
        cronTriggers: [],
        config: { triggers: [] },
      },
    ]);
  });

  it("rejects an onFailure handler that is not another function of the registration", () => {
    expect(invalidMessage(register({ functions: [{ ...fn("a", "e"), onFailureFunctionId: "nowhere" }] }))).toBe(
      'function "a": on_failure_function_id: "nowhere" must be another function of this registration',
    );
    expect(invalidMessage(register({ functions: [{ ...fn("a", "e"), onFailureFunctionId: "a" }] }))).toBe(
      'function "a": on_failure_function_id: "a" must be another function of this registration',
    );
  });

  it("still requires a trigger of a function that handles no failures", () => {
    expect(
      invalidMessage(
        register({ functions: [{ ...fn("a", "e"), onFailureFunctionId: "handler" }, { id: "handler", triggers: [] }, { id: "idle", triggers: [] }] }),
      ),
    ).toBe('function "idle": triggers: at least one is required');
  });

  it("rejects more retries than allowed", () => {
    expect(invalidMessage(register({ functions: [{ ...fn("a", "e"), retries: MAX_RETRIES + 1 }] }))).toBe(
      `function "a": retries: must be 0 to ${MAX_RETRIES}`,
    );
    expect(validateRegistration(register({ functions: [{ ...fn("a", "e"), retries: MAX_RETRIES }] }))[0]?.config).toMatchObject({
      retries: MAX_RETRIES,
    });
  });
});

describe("validateRegistration of cancelOn and timeouts", () => {
  const withRules = (rules: Omit<FunctionInit, "id" | "triggers">) =>
    register({ functions: [{ ...fn("order", "order.placed"), ...rules } as FunctionInit] });

  it("maps cancelOn rules with their indexed equality, and timeouts in ms, into the run rules and the config", () => {
    const [f] = validateRegistration(
      withRules({
        cancelOn: [
          { event: "order.cancelled", condition: "event.data.id == async.data.id && async.data.final", timeout: { seconds: 60n, nanos: 0 } },
          { event: "shop.closed" },
        ],
        timeouts: { start: { seconds: 1n, nanos: 500_000_000 }, finish: { seconds: 86_400n, nanos: 0 } },
      }),
    );
    expect(f!.runRules).toEqual({
      startMs: 1_500,
      finishMs: 86_400_000,
      cancelOn: [
        {
          event: "order.cancelled",
          condition: "event.data.id == async.data.id && async.data.final",
          equality: { eventPath: ["data", "id"], asyncPath: ["data", "id"] },
          timeoutMs: 60_000,
        },
        { event: "shop.closed", condition: null, equality: undefined, timeoutMs: undefined },
      ],
    });
    expect(f!.config).toMatchObject({
      cancelOn: [{ event: "order.cancelled", if: "event.data.id == async.data.id && async.data.final", timeoutMs: 60_000 }, { event: "shop.closed" }],
      timeouts: { startMs: 1_500, finishMs: 86_400_000 },
    });
  });

  it("leaves a function without rules without run rules, and its config without them", () => {
    const [f] = validateRegistration(withRules({}));
    expect(f!.runRules).toBeUndefined();
    expect(f!.config).not.toHaveProperty("cancelOn");
    expect(f!.config).not.toHaveProperty("timeouts");
  });

  it("rejects a bad rule or duration, naming the field", () => {
    expectInvalid(withRules({ cancelOn: [{ event: "" }] }), 'function "order": cancel_on[0].event: must be an event name of 1-256 characters');
    expect(() => validateRegistration(withRules({ cancelOn: [{ event: "x", condition: "event.data.id ==" }] }))).toThrow(
      /^\[invalid_argument\] function "order": cancel_on\[0\]\.condition: invalid CEL expression: /,
    );
    expectInvalid(
      withRules({ cancelOn: Array.from({ length: 9 }, () => ({ event: "x" })) }),
      'function "order": cancel_on: at most 8 rules',
    );
    expectInvalid(withRules({ timeouts: { start: { seconds: 0n, nanos: 0 } } }), 'function "order": timeouts.start: must be a duration of 1 ms to 366 days');
    expectInvalid(
      withRules({ timeouts: { finish: { seconds: 400n * 86_400n, nanos: 0 } } }),
      'function "order": timeouts.finish: must be a duration of 1 ms to 366 days',
    );
    expectInvalid(
      withRules({ cancelOn: [{ event: "x", timeout: { seconds: -5n, nanos: 0 } }] }),
      'function "order": cancel_on[0].timeout: must be a duration of 1 ms to 366 days',
    );
  });
});

describe("validateRegistration of flow control", () => {
  const withFlow = (rules: Omit<FunctionInit, "id" | "triggers">) =>
    register({ functions: [{ ...fn("charge", "order.placed"), ...rules } as FunctionInit] });

  it("maps concurrency limits, a throttle and a priority into the run rules and the config", () => {
    const [f] = validateRegistration(
      withFlow({
        concurrency: [{ limit: 3, key: "event.data.customer" }, { limit: 100, scope: 2 }],
        throttle: { limit: 5, period: { seconds: 1n, nanos: 0 }, burst: 2, key: "event.data.customer" },
        priority: { run: "event.data.vip ? 60 : 0" },
      }),
    );
    expect(f!.runRules).toEqual({
      startMs: undefined,
      finishMs: undefined,
      cancelOn: [],
      concurrency: [
        { limit: 3, key: "event.data.customer", scope: "function" },
        { limit: 100, key: "", scope: "app" },
      ],
      throttle: { limit: 5, periodMs: 1_000, burst: 2, key: "event.data.customer" },
      priority: "event.data.vip ? 60 : 0",
    });
    expect(f!.config).toMatchObject({
      concurrency: [{ limit: 3 }, { limit: 100, scope: "app" }],
      throttle: { limit: 5, periodMs: 1_000, burst: 2 },
      priority: { run: "event.data.vip ? 60 : 0" },
    });
  });

  it("rejects limits out of range and keys that do not compile, naming the field", () => {
    expectInvalid(withFlow({ concurrency: [{ limit: 0 }] }), 'function "charge": concurrency[0].limit: must be 1 to 10000');
    expectInvalid(withFlow({ concurrency: [{ limit: 1 }, { limit: 1 }, { limit: 1 }] }), 'function "charge": concurrency: at most 2 limits');
    expect(() => validateRegistration(withFlow({ concurrency: [{ limit: 1, key: "event.data." }] }))).toThrow(
      /function "charge": concurrency\[0\]\.key: invalid CEL expression/,
    );
    expectInvalid(withFlow({ throttle: { limit: 1 } }), 'function "charge": throttle.period: required');
    expectInvalid(withFlow({ throttle: { limit: 0, period: { seconds: 1n, nanos: 0 } } }), 'function "charge": throttle.limit: must be 1 to 10000');
    expect(() => validateRegistration(withFlow({ throttle: { limit: 1, period: { seconds: 1n, nanos: 0 }, key: "nope" } }))).toThrow(
      /function "charge": throttle\.key: invalid CEL expression: unknown variable "nope"/,
    );
    expectInvalid(withFlow({ priority: { run: "" } }), 'function "charge": priority.run: must be a CEL expression');
  });

  it("maps a debounce and a batchEvents into the run rules' window and the config", () => {
    const [d] = validateRegistration(
      withFlow({ debounce: { period: { seconds: 0n, nanos: 500_000_000 }, key: "event.data.user", timeout: { seconds: 5n, nanos: 0 } } }),
    );
    expect(d!.runRules?.window).toEqual({ kind: "debounce", periodMs: 500, timeoutMs: 5_000, key: "event.data.user" });
    expect(d!.config).toMatchObject({ debounce: { periodMs: 500, timeoutMs: 5_000, key: "event.data.user" } });
    const [b] = validateRegistration(withFlow({ batchEvents: { maxSize: 100, timeout: { seconds: 2n, nanos: 0 } } }));
    expect(b!.runRules?.window).toEqual({ kind: "batch", maxSize: 100, timeoutMs: 2_000, key: "" });
    expect(b!.config).toMatchObject({ batchEvents: { maxSize: 100, timeoutMs: 2_000 } });
  });

  it("rejects a bad debounce or batchEvents, naming the field", () => {
    const second = { seconds: 1n, nanos: 0 };
    expectInvalid(withFlow({ debounce: {} }), 'function "charge": debounce.period: required');
    expectInvalid(withFlow({ debounce: { period: { seconds: 0n, nanos: 0 } } }), 'function "charge": debounce.period: must be a duration of 1 ms to 366 days');
    expect(() => validateRegistration(withFlow({ debounce: { period: second, key: "event.data." } }))).toThrow(
      /function "charge": debounce\.key: invalid CEL expression/,
    );
    expectInvalid(withFlow({ batchEvents: { maxSize: 0, timeout: second } }), 'function "charge": batch_events.max_size: must be 1 to 100');
    expectInvalid(withFlow({ batchEvents: { maxSize: 101, timeout: second } }), 'function "charge": batch_events.max_size: must be 1 to 100');
    expectInvalid(withFlow({ batchEvents: { maxSize: 10 } }), 'function "charge": batch_events.timeout: required');
    expectInvalid(
      withFlow({ debounce: { period: second }, batchEvents: { maxSize: 10, timeout: second } }),
      'function "charge": debounce: cannot be combined with batch_events',
    );
  });
});
