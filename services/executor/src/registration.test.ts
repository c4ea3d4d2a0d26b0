import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { RegisterSchema, type FunctionConfigSchema } from "@stepwise/proto";
import { describe, expect, it } from "vitest";
import { MAX_CAPACITY, validateRegistration } from "./registration.js";

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
      expectInvalid(register({ appId: "a".repeat(129) }), `register.app_id: "${"a".repeat(129)}" must be 1-128 letters, digits, "-" or "_"`);
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
