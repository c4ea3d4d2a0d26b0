import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { type AwaitSchema, SuspendSchema } from "@stepwise/proto";
import { describe, expect, it } from "vitest";
import { MAX_AWAITS, MAX_EVENT_DATA_BYTES, MAX_SUSPEND_MS } from "@stepwise/proto";
import { parseAwaits } from "./suspension.js";

type AwaitInit = MessageInitShape<typeof AwaitSchema>;

const NOW = Date.UTC(2025, 5, 1, 12, 0, 0);
const HOUR = 3_600_000;

function suspend(...awaits: AwaitInit[]) {
  return create(SuspendSchema, { runId: "run-1", lease: 3, awaits });
}

const sleep = (stepKey: string, wakeAtMs: number | undefined): AwaitInit => ({
  stepKey,
  stepId: stepKey.split(":")[0] ?? stepKey,
  kind: { case: "sleep", value: wakeAtMs === undefined ? {} : { wakeAt: timestampFromMs(wakeAtMs) } },
});

const retry = (stepKey: string, retryAtMs: number | undefined): AwaitInit => ({
  stepKey,
  stepId: stepKey.split(":")[0] ?? stepKey,
  kind: { case: "retry", value: retryAtMs === undefined ? {} : { retryAt: timestampFromMs(retryAtMs) } },
});

/** A wait; timeoutAtMs null leaves the timeout out. */
const wait = (stepKey: string, event: string, condition: string, timeoutAtMs: number | null = NOW + HOUR): AwaitInit => ({
  stepKey,
  stepId: stepKey.split(":")[0] ?? stepKey,
  kind: {
    case: "waitForEvent",
    value: { event, condition, ...(timeoutAtMs === null ? {} : { timeoutAt: timestampFromMs(timeoutAtMs) }) },
  },
});

/** An invoke; timeoutAtMs null leaves the timeout out. */
const invoke = (stepKey: string, functionId: string, dataJson: string, timeoutAtMs: number | null = NOW + HOUR, appId = "app"): AwaitInit => ({
  stepKey,
  stepId: stepKey.split(":")[0] ?? stepKey,
  kind: {
    case: "invoke",
    value: { appId, functionId, dataJson, ...(timeoutAtMs === null ? {} : { timeoutAt: timestampFromMs(timeoutAtMs) }) },
  },
});

function protocolError(...awaits: AwaitInit[]): ConnectError {
  let caught: unknown;
  try {
    parseAwaits(suspend(...awaits), NOW);
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(ConnectError);
  const err = caught as ConnectError;
  expect(err.code).toBe(Code.InvalidArgument);
  return err;
}

describe("parseAwaits", () => {
  it("reads sleeps, retries and waits, with the condition's indexable equality", () => {
    const parsed = parseAwaits(
      suspend(
        sleep("nap:0", NOW + HOUR),
        retry("charge:1", NOW + 2 * HOUR),
        wait("ship:0", "shipment.created", "event.data.orderId == async.data.orderId && async.data.ok == true", NOW + 3 * HOUR),
        wait("any:0", "invoice.paid", ""),
        wait("cond:0", "invoice.paid", "async.data.total > 10"),
      ),
      NOW,
    );
    expect(parsed.invalid).toEqual([]);
    expect(parsed.awaits).toEqual([
      { stepKey: "nap:0", stepId: "nap", kind: "sleep", dueAtMs: NOW + HOUR },
      { stepKey: "charge:1", stepId: "charge", kind: "retry", dueAtMs: NOW + 2 * HOUR },
      {
        stepKey: "ship:0",
        stepId: "ship",
        kind: "wait",
        dueAtMs: NOW + 3 * HOUR,
        event: "shipment.created",
        condition: "event.data.orderId == async.data.orderId && async.data.ok == true",
        equality: { eventPath: ["data", "orderId"], asyncPath: ["data", "orderId"] },
      },
      { stepKey: "any:0", stepId: "any", kind: "wait", dueAtMs: NOW + HOUR, event: "invoice.paid", condition: null, equality: undefined },
      {
        stepKey: "cond:0",
        stepId: "cond",
        kind: "wait",
        dueAtMs: NOW + HOUR,
        event: "invoice.paid",
        condition: "async.data.total > 10",
        equality: undefined,
      },
    ]);
  });

  it("reads invokes, with or without a timeout, empty data as {}", () => {
    const parsed = parseAwaits(suspend(invoke("sub:0", "child", '{"n":1}'), invoke("bare:0", "child", "", null, "other-app")), NOW);
    expect(parsed.invalid).toEqual([]);
    expect(parsed.awaits).toEqual([
      { stepKey: "sub:0", stepId: "sub", kind: "invoke", dueAtMs: NOW + HOUR, appId: "app", functionId: "child", dataJson: '{"n":1}' },
      { stepKey: "bare:0", stepId: "bare", kind: "invoke", dueAtMs: null, appId: "other-app", functionId: "child", dataJson: "{}" },
    ]);
  });

  it("accepts a time in the past (it fires at once) and one at the limit", () => {
    const parsed = parseAwaits(suspend(sleep("past:0", NOW - HOUR), sleep("far:0", NOW + MAX_SUSPEND_MS)), NOW);
    expect(parsed.invalid).toEqual([]);
    expect(parsed.awaits.map((a) => a.dueAtMs)).toEqual([NOW - HOUR, NOW + MAX_SUSPEND_MS]);
  });

  describe("throws INVALID_ARGUMENT for a malformed message", () => {
    it("no awaits", () => {
      expect(protocolError().rawMessage).toBe(`suspend.awaits: must hold 1 to ${MAX_AWAITS} awaits`);
    });

    it("more awaits than allowed", () => {
      const many = Array.from({ length: MAX_AWAITS + 1 }, (_, i) => sleep(`s:${i}`, NOW + HOUR));
      expect(protocolError(...many).rawMessage).toBe(`suspend.awaits: must hold 1 to ${MAX_AWAITS} awaits`);
      expect(parseAwaits(suspend(...many.slice(0, MAX_AWAITS)), NOW).awaits).toHaveLength(MAX_AWAITS);
    });

    it("a step key repeated, empty or too long", () => {
      const message = "suspend.awaits: each needs a distinct step key of 1-1024 characters";
      expect(protocolError(sleep("a:0", NOW + HOUR), wait("a:0", "e", "")).rawMessage).toBe(message);
      expect(protocolError(sleep("", NOW + HOUR)).rawMessage).toBe(message);
      expect(protocolError(sleep("k".repeat(1025), NOW + HOUR)).rawMessage).toBe(message);
      expect(parseAwaits(suspend(sleep("k".repeat(1024), NOW + HOUR)), NOW).awaits).toHaveLength(1);
    });
  });

  describe("returns as invalid, naming the step, an await whose content is wrong", () => {
    it("a time more than a year away", () => {
      const parsed = parseAwaits(
        suspend(
          sleep("nap:0", NOW + MAX_SUSPEND_MS + 1),
          retry("charge:0", NOW + 2 * MAX_SUSPEND_MS),
          wait("ship:0", "shipment.created", "", NOW + MAX_SUSPEND_MS + 1),
          sleep("ok:0", NOW + HOUR),
        ),
        NOW,
      );
      expect(parsed.invalid).toEqual([
        { stepKey: "nap:0", stepId: "nap", name: "InvalidAwait", message: 'step "nap": the sleep\'s end is more than a year away' },
        { stepKey: "charge:0", stepId: "charge", name: "InvalidAwait", message: 'step "charge": the retry time is more than a year away' },
        { stepKey: "ship:0", stepId: "ship", name: "InvalidAwait", message: 'step "ship": the wait\'s timeout is more than a year away' },
      ]);
      // The valid ones are still read.
      expect(parsed.awaits.map((a) => a.stepKey)).toEqual(["ok:0"]);
    });

    it("a missing time", () => {
      const parsed = parseAwaits(suspend(sleep("nap:0", undefined), retry("charge:0", undefined), wait("ship:0", "e", "", null)), NOW);
      expect(parsed.awaits).toEqual([]);
      expect(parsed.invalid.map((i) => [i.stepKey, i.message])).toEqual([
        ["nap:0", 'step "nap": the sleep\'s end is missing'],
        ["charge:0", 'step "charge": the retry time is missing'],
        ["ship:0", 'step "ship": the wait\'s timeout is missing'],
      ]);
    });

    it("a bad event name", () => {
      const parsed = parseAwaits(suspend(wait("a:0", "", ""), wait("b:0", "e".repeat(257), ""), wait("c:0", "e".repeat(256), "")), NOW);
      expect(parsed.invalid).toEqual([
        { stepKey: "a:0", stepId: "a", name: "InvalidAwait", message: 'step "a": event must be an event name of 1-256 characters' },
        { stepKey: "b:0", stepId: "b", name: "InvalidAwait", message: 'step "b": event must be an event name of 1-256 characters' },
      ]);
      expect(parsed.awaits.map((a) => a.stepKey)).toEqual(["c:0"]);
    });

    it("a condition that does not compile, or uses a variable other than event and async", () => {
      const parsed = parseAwaits(
        suspend(wait("syntax:0", "e", "async.data.x =="), wait("unknown:0", "e", "order.id == async.data.id"), wait("ok:0", "e", "async.data.x == 1")),
        NOW,
      );
      expect(parsed.awaits.map((a) => a.stepKey)).toEqual(["ok:0"]);
      expect(parsed.invalid).toHaveLength(2);
      expect(parsed.invalid[0]).toMatchObject({ stepKey: "syntax:0", stepId: "syntax", name: "InvalidConditionError" });
      expect(parsed.invalid[0]!.message).toMatch(/^step "syntax": if: invalid CEL expression: .+/);
      expect(parsed.invalid[1]).toEqual({
        stepKey: "unknown:0",
        stepId: "unknown",
        name: "InvalidConditionError",
        message: 'step "unknown": if: invalid CEL expression: unknown variable "order": the expression may use `event` and `async`',
      });
    });

    it("an invoke with a bad function, bad data or a timeout too far away", () => {
      const parsed = parseAwaits(
        suspend(
          invoke("fn:0", "not an id", "{}"),
          invoke("app:0", "fn", "{}", NOW + HOUR, ""),
          invoke("json:0", "fn", "{nope"),
          invoke("array:0", "fn", "[1]"),
          invoke("nul:0", "fn", '{"a":"\\u0000"}'),
          invoke("big:0", "fn", JSON.stringify({ s: "x".repeat(MAX_EVENT_DATA_BYTES) })),
          invoke("far:0", "fn", "{}", NOW + MAX_SUSPEND_MS + 1),
        ),
        NOW,
      );
      expect(parsed.awaits).toEqual([]);
      expect(parsed.invalid.map((i) => [i.stepKey, i.name, i.message])).toEqual([
        ["fn:0", "InvalidAwait", 'step "fn": invoke: function_id must be 1-128 letters, digits, "-" or "_"'],
        ["app:0", "InvalidAwait", 'step "app": invoke: app_id must be 1-128 letters, digits, "-" or "_"'],
        ["json:0", "InvalidAwait", 'step "json": invoke: data is not JSON'],
        ["array:0", "InvalidAwait", 'step "array": invoke: data must be a JSON object'],
        ["nul:0", "InvalidAwait", 'step "nul": invoke: data contains a NUL character or a lone surrogate'],
        ["big:0", "InvalidAwait", `step "big": invoke: data is more than ${MAX_EVENT_DATA_BYTES} bytes of JSON`],
        ["far:0", "InvalidAwait", 'step "far": the invoke\'s timeout is more than a year away'],
      ]);
    });

    it("an await of no kind", () => {
      const parsed = parseAwaits(suspend({ stepKey: "odd:0", stepId: "odd" }), NOW);
      expect(parsed.awaits).toEqual([]);
      expect(parsed.invalid).toEqual([{ stepKey: "odd:0", stepId: "odd", name: "InvalidAwait", message: 'step "odd": unknown kind of await' }]);
    });
  });
});
