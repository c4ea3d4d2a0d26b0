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
