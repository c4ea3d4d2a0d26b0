import { describe, expect, it } from "vitest";
import { deserializeError, NonRetriableError, serializeError, StepError, type SerializedError } from "./errors.js";

describe("NonRetriableError", () => {
  it("is an Error named NonRetriableError that keeps its cause", () => {
    const cause = new TypeError("card missing");
    const err = new NonRetriableError("order has no card", { cause });
    expect(err).toBeInstanceOf(Error);
    expect(err.name).toBe("NonRetriableError");
    expect(err.message).toBe("order has no card");
    expect(err.cause).toBe(cause);
    expect(String(err)).toBe("NonRetriableError: order has no card");
  });

  it("has no cause when none is given", () => {
    expect(new NonRetriableError("x").cause).toBeUndefined();
  });
});

describe("StepError", () => {
  it("is named StepError, names the step in its message and keeps the cause", () => {
    const cause = new Error("gateway down");
    const err = new StepError("process-payment", cause);
    expect(err).toBeInstanceOf(Error);
    expect(err.name).toBe("StepError");
    expect(err.stepId).toBe("process-payment");
    expect(err.cause).toBe(cause);
    expect(err.message).toBe('step "process-payment" failed: gateway down');
  });
});

describe("serializeError / deserializeError", () => {
  it("keeps name, message and stack of a plain Error", () => {
    const err = new RangeError("out of range");
    const s = serializeError(err);
    expect(s).toEqual({ name: "RangeError", message: "out of range", stack: err.stack });
    expect(s.nonRetriable).toBeUndefined();

    const back = deserializeError(s);
    expect(back).toBeInstanceOf(Error);
    expect(back.name).toBe("RangeError");
    expect(back.message).toBe("out of range");
    expect(back.stack).toBe(err.stack);
    expect(back.cause).toBeUndefined();
  });

  it("survives JSON, the way it crosses the wire", () => {
    const err = new NonRetriableError("outer", { cause: new Error("inner") });
    const s = JSON.parse(JSON.stringify(serializeError(err))) as SerializedError;
    expect(s).toEqual(serializeError(err));
  });

  it("marks NonRetriableError and rebuilds it as one", () => {
    const err = new NonRetriableError("refused");
    const s = serializeError(err);
    expect(s.nonRetriable).toBe(true);
    expect(s.name).toBe("NonRetriableError");

    const back = deserializeError(s);
    expect(back).toBeInstanceOf(NonRetriableError);
    expect(back.name).toBe("NonRetriableError");
    expect(back.message).toBe("refused");
    expect(back.stack).toBe(err.stack);
  });

  it("keeps the retry flag and the name of a NonRetriableError subclass", () => {
    class CardDeclinedError extends NonRetriableError {
      override name = "CardDeclinedError";
    }
    const s = serializeError(new CardDeclinedError("declined"));
    expect(s).toMatchObject({ name: "CardDeclinedError", nonRetriable: true });

    const back = deserializeError(s);
    expect(back).toBeInstanceOf(NonRetriableError);
    expect(back.name).toBe("CardDeclinedError");
    expect(serializeError(back)).toEqual(s);
  });

  it("keeps nested causes, each with its name, message, stack and retry flag", () => {
    const root = new TypeError("socket closed");
    const middle = new NonRetriableError("payment refused", { cause: root });
    const top = new StepError("charge", middle);

    const s = serializeError(top);
    expect(s.name).toBe("StepError");
    expect(s.nonRetriable).toBeUndefined();
    expect(s.cause).toMatchObject({ name: "NonRetriableError", message: "payment refused", nonRetriable: true });
    expect(s.cause?.cause).toMatchObject({ name: "TypeError", message: "socket closed", stack: root.stack });
    expect(s.cause?.cause?.cause).toBeUndefined();

    const back = deserializeError(s);
    expect(back.name).toBe("StepError");
    expect(back.message).toBe('step "charge" failed: payment refused');
    expect(back.stack).toBe(top.stack);
    const c1 = back.cause as Error;
    expect(c1).toBeInstanceOf(NonRetriableError);
    expect(c1.message).toBe("payment refused");
    expect(c1.stack).toBe(middle.stack);
    const c2 = c1.cause as Error;
    expect(c2).toBeInstanceOf(Error);
    expect(c2).not.toBeInstanceOf(NonRetriableError);
    expect(c2.name).toBe("TypeError");
    expect(c2.message).toBe("socket closed");
    expect(c2.stack).toBe(root.stack);

    // A second round trip changes nothing.
    expect(serializeError(back)).toEqual(s);
  });

  it("serialises a non-Error cause as a readable message", () => {
    const s = serializeError(new Error("outer", { cause: "disk full" }));
    expect(s.cause).toEqual({ name: "Error", message: "disk full" });
  });

  it("stops at a bounded depth on a cause cycle", () => {
    const a = new Error("a");
    const b = new Error("b", { cause: a });
    (a as { cause?: unknown }).cause = b;
    const s = serializeError(a);
    let depth = 0;
    for (let c: SerializedError | undefined = s; c; c = c.cause) depth++;
    expect(depth).toBeGreaterThan(1);
    expect(depth).toBeLessThanOrEqual(9);
  });

  describe("non-Error throwables", () => {
    it("a string becomes the message", () => {
      expect(serializeError("payment failed")).toEqual({ name: "Error", message: "payment failed" });
    });

    it("an object becomes its JSON", () => {
      const s = serializeError({ code: 42, reason: "declined" });
      expect(s.name).toBe("Error");
      expect(JSON.parse(s.message)).toEqual({ code: 42, reason: "declined" });
    });

    it("a circular object still gives a message that shows its content", () => {
      const obj: Record<string, unknown> = { code: "E_LOOP", detail: "went round" };
      obj["self"] = obj;
      const s = serializeError(obj);
      expect(s.name).toBe("Error");
      expect(s.message).not.toBe("[object Object]");
      expect(s.message).toContain("E_LOOP");
      expect(s.message).toContain("went round");
    });

    it("null, undefined, numbers and BigInts give their text", () => {
      expect(serializeError(null).message).toBe("null");
      expect(serializeError(undefined).message).toBe("undefined");
      expect(serializeError(7).message).toBe("7");
      expect(serializeError(10n).message).toBe("10");
    });

    it("an object holding a BigInt still shows its content", () => {
      const s = serializeError({ amount: 10n, currency: "EUR" });
      expect(s.message).toContain("EUR");
      expect(s.message).toContain("10");
    });

    it("rebuilds as a plain Error with the message", () => {
      const back = deserializeError(serializeError("boom"));
      expect(back).toBeInstanceOf(Error);
      expect(back.name).toBe("Error");
      expect(back.message).toBe("boom");
    });
  });
});
