import { describe, expect, it } from "vitest";
import {
  compileCondition,
  type ConditionEvent,
  type ConditionVariable,
  InvalidConditionError,
  MAX_CONDITION_LENGTH,
  valueAt,
} from "./cel-condition.js";

function ev(data: unknown, over: Partial<ConditionEvent> = {}): ConditionEvent {
  return { id: "ev-1", name: "order.placed", data, ts: "2025-01-02T03:04:05.678Z", ...over };
}

/** The InvalidConditionError compiling source throws; fails the test when it compiles. */
function compileError(source: string, allowed: readonly ConditionVariable[] = ["event"]): InvalidConditionError {
  let caught: unknown;
  try {
    compileCondition(source, allowed);
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(InvalidConditionError);
  const err = caught as InvalidConditionError;
  expect(err.name).toBe("InvalidConditionError");
  return err;
}

describe("compileCondition", () => {
  describe("refuses with InvalidConditionError", () => {
    it("a syntax error, saying where", () => {
      expect(compileError("event.data.total >").message).toContain("1:18");
      expect(compileError("(event.data.total > 1").message).toContain("1:22");
      expect(compileError("event.data.x == 1\n && )").message).toContain("2:2");
      compileError("event.data.'x' == 1");
    });

    it("an unknown variable, naming it and the allowed ones", () => {
      expect(compileError("order.total > 100").message).toBe('unknown variable "order": the expression may use `event`');
      expect(compileError("async.data.x == 1").message).toBe('unknown variable "async": the expression may use `event`');
      expect(compileError("event.data.id == other.data.id", ["event", "async"]).message).toBe(
        'unknown variable "other": the expression may use `event` and `async`',
      );
      // Inside a call, a list or a map too.
      compileError("size(items) > 0");
      compileError("[event.id, x].size() == 2");
      compileError("{'k': y}.k == 1");
    });

    it("allows comprehension variables, which are bound, not free", () => {
      const c = compileCondition("event.data.items.all(i, i.qty > 0)", ["event"]);
      expect(c.test({ event: ev({ items: [{ qty: 1 }, { qty: 2 }] }) })).toBe(true);
      expect(c.test({ event: ev({ items: [{ qty: 1 }, { qty: 0 }] }) })).toBe(false);
      // The bound name is free again outside its comprehension.
      compileError("event.data.items.exists(i, i.qty > 0) && i.qty > 0");
    });

    it("an empty or blank expression", () => {
      expect(compileError("").message).toBe("the expression is empty");
      expect(compileError("  \n\t ").message).toBe("the expression is empty");
    });

    it("an expression longer than the limit, which one of the limit's length is not", () => {
      const atLimit = `event.data.s == '${"x".repeat(MAX_CONDITION_LENGTH - "event.data.s == ''".length)}'`;
      expect(atLimit).toHaveLength(MAX_CONDITION_LENGTH);
      expect(compileCondition(atLimit, ["event"]).test({ event: ev({ s: "x".repeat(MAX_CONDITION_LENGTH - 18) }) })).toBe(true);
      expect(compileError(`${atLimit} `).message).toBe(`the expression is longer than ${MAX_CONDITION_LENGTH} characters`);
    });
  });

  describe("evaluation", () => {
    it("is true only when the expression is true", () => {
      const c = compileCondition("event.data.total > 100 && event.name == 'order.placed'", ["event"]);
      expect(c.source).toBe("event.data.total > 100 && event.name == 'order.placed'");
      expect(c.test({ event: ev({ total: 150 }) })).toBe(true);
      expect(c.test({ event: ev({ total: 100 }) })).toBe(false);
      expect(c.test({ event: ev({ total: 150 }, { name: "order.cancelled" }) })).toBe(false);
    });

    it("sees the event's id, name, data and ts", () => {
      const c = compileCondition(
        "event.id == 'ev-9' && event.name == 'n' && event.data.tags[1] == 'b' && event.ts.startsWith('2025-01-02')",
        ["event"],
      );
      expect(c.test({ event: ev({ tags: ["a", "b"] }, { id: "ev-9", name: "n" }) })).toBe(true);
      expect(c.test({ event: ev({ tags: ["a", "c"] }, { id: "ev-9", name: "n" }) })).toBe(false);
    });

    it("a missing field makes it false rather than throwing", () => {
      const c = compileCondition("event.data.order.total > 100", ["event"]);
      expect(() => c.test({ event: ev({}) })).not.toThrow();
      expect(c.test({ event: ev({}) })).toBe(false);
      expect(c.test({ event: ev({ order: null }) })).toBe(false);
      expect(c.test({ event: ev({ order: {} }) })).toBe(false);
      expect(c.test({ event: ev({ order: { total: 101 } }) })).toBe(true);
      // An unbound variable is missing too.
      expect(c.test({})).toBe(false);
    });

    it("a type mismatch makes it false rather than throwing", () => {
      const greater = compileCondition("event.data.total > 100", ["event"]);
      expect(greater.test({ event: ev({ total: "lots" }) })).toBe(false);
      expect(greater.test({ event: ev({ total: [1000] }) })).toBe(false);
      expect(greater.test({ event: ev({ total: 100.5 }) })).toBe(true);
      // Equality across types is false, not an error: the string "1" is not the number 1.
      const equal = compileCondition("event.data.x == 1", ["event"]);
      expect(equal.test({ event: ev({ x: "1" }) })).toBe(false);
      expect(equal.test({ event: ev({ x: 1 }) })).toBe(true);
      // A call with no matching overload.
      expect(compileCondition("size(event.data.n) > 0", ["event"]).test({ event: ev({ n: 5 }) })).toBe(false);
    });

    it("a result that is not the boolean true is false", () => {
      const c = compileCondition("event.data.flag", ["event"]);
      expect(c.test({ event: ev({ flag: true }) })).toBe(true);
      expect(c.test({ event: ev({ flag: 1 }) })).toBe(false);
      expect(c.test({ event: ev({ flag: "true" }) })).toBe(false);
      expect(c.test({ event: ev({ flag: false }) })).toBe(false);
    });

    it("binds the run's event and the candidate in a wait", () => {
      const c = compileCondition("event.data.orderId == async.data.orderId && async.data.status == 'shipped'", ["event", "async"]);
      const run = ev({ orderId: "o-1" });
      expect(c.test({ event: run, async: ev({ orderId: "o-1", status: "shipped" }) })).toBe(true);
      expect(c.test({ event: run, async: ev({ orderId: "o-2", status: "shipped" }) })).toBe(false);
      expect(c.test({ event: run, async: ev({ orderId: "o-1" }) })).toBe(false);
      expect(c.test({ event: run })).toBe(false);
    });
  });

  describe("equality extraction", () => {
    const equality = (source: string) => compileCondition(source, ["event", "async"]).equality;

    it("finds event.<path> == async.<path> in either order", () => {
      expect(equality("event.data.orderId == async.data.orderId")).toEqual({ eventPath: ["data", "orderId"], asyncPath: ["data", "orderId"] });
      expect(equality("async.data.order.id == event.data.id")).toEqual({ eventPath: ["data", "id"], asyncPath: ["data", "order", "id"] });
      expect(equality("event.id == async.data.parent")).toEqual({ eventPath: ["id"], asyncPath: ["data", "parent"] });
    });

    it("finds it among && conjuncts, however nested", () => {
      expect(equality("async.data.status == 'shipped' && event.data.a.b == async.data.c")).toEqual({
        eventPath: ["data", "a", "b"],
        asyncPath: ["data", "c"],
      });
      expect(equality("(async.data.n > 1 && (true && async.data.k == event.data.k)) && event.name == 'x'")).toEqual({
        eventPath: ["data", "k"],
        asyncPath: ["data", "k"],
      });
    });

    it("does not find it under || or !, where it does not have to hold", () => {
      expect(equality("event.data.a == async.data.b || async.data.any == true")).toBeUndefined();
      expect(equality("async.data.x == 1 && (event.data.a == async.data.b || false)")).toBeUndefined();
      expect(equality("!(event.data.a == async.data.b)")).toBeUndefined();
      expect(equality("event.data.a != async.data.b")).toBeUndefined();
    });

    it("does not find it with index access, a whole variable, has(), or one side only", () => {
      expect(equality("event.data['a'] == async.data.b")).toBeUndefined();
      expect(equality("event.data.a == async.data['b']")).toBeUndefined();
      expect(equality("event.data.list[0] == async.data.b")).toBeUndefined();
      expect(equality("event == async")).toBeUndefined();
      expect(equality("event.data.a == async")).toBeUndefined();
      expect(equality("has(event.data.a) == has(async.data.a)")).toBeUndefined();
      expect(equality("event.data.a == event.data.b")).toBeUndefined();
      expect(equality("async.data.a == async.data.b")).toBeUndefined();
      expect(equality("event.data.a == 'x'")).toBeUndefined();
    });

    it("is not looked for when async is not allowed", () => {
      expect(compileCondition("event.data.a == event.data.b && event.id == 'x'", ["event"]).equality).toBeUndefined();
    });
  });

  describe("cache", () => {
    it("returns the same compiled condition for the same text and variables", () => {
      const source = `event.data.cached == ${Math.random()}`;
      const a = compileCondition(source, ["event"]);
      expect(compileCondition(source, ["event"])).toBe(a);
      expect(compileCondition(source, ["event", "async"])).not.toBe(a);
    });

    it("does not let a condition compiled with async through for a trigger that only allows event", () => {
      const source = `async.data.id == event.data.id && event.data.n == ${Math.random()}`;
      expect(compileCondition(source, ["event", "async"]).equality).toEqual({ eventPath: ["data", "id"], asyncPath: ["data", "id"] });
      expect(compileError(source, ["event"]).message).toBe('unknown variable "async": the expression may use `event`');
    });

    it("does not cache a failure as a success", () => {
      const source = `event.data.x == ${Math.random()} &&`;
      compileError(source);
      compileError(source);
    });
  });
});

describe("valueAt", () => {
  it("follows object keys", () => {
    expect(valueAt({ data: { order: { id: "o-1" } } }, ["data", "order", "id"])).toBe("o-1");
    expect(valueAt({ data: { n: 0 } }, ["data", "n"])).toBe(0);
    expect(valueAt({ a: 1 }, [])).toEqual({ a: 1 });
  });

  it("is undefined through a missing key, null, a scalar or an array", () => {
    expect(valueAt({ data: {} }, ["data", "order", "id"])).toBeUndefined();
    expect(valueAt({ data: null }, ["data", "id"])).toBeUndefined();
    expect(valueAt({ data: "text" }, ["data", "length"])).toBeUndefined();
    expect(valueAt({ data: ["a", "b"] }, ["data", "0"])).toBeUndefined();
    expect(valueAt(undefined, ["x"])).toBeUndefined();
  });
});

describe("conditions that can never be true or false", () => {
  it.each([
    ["1 + 1", "arithmetic"],
    ['"yes"', "a constant"],
    ["42", "a constant"],
    ["[true]", "a list"],
    ["{'a': true}", "a map or message"],
  ])("rejects %s as %s", (source, kind) => {
    expect(() => compileCondition(source, ["event"])).toThrow(
      new InvalidConditionError(`the expression is ${kind}, not a condition that is true or false`),
    );
  });

  it("accepts a field that may hold a boolean, and boolean literals", () => {
    expect(compileCondition("event.data.vip", ["event"]).test({ event: { id: "e", name: "n", data: { vip: true }, ts: "" } })).toBe(true);
    expect(compileCondition("false", ["event"]).test({})).toBe(false);
  });
});
