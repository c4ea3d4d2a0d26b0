import { describe, expect, it } from "vitest";
import { conditionEvent, waitMatches, waitOutputJson } from "./wait-matching.js";
import type { WaitEvent } from "../journal/wait-store.js";

const TS = Date.UTC(2025, 2, 4, 5, 6, 7, 89);

function ev(data: unknown, over: Partial<WaitEvent> = {}): WaitEvent {
  return { id: "ev-1", name: "shipment.created", dataJson: JSON.stringify(data), tsMs: TS, ...over };
}

describe("conditionEvent", () => {
  it("decodes the data and gives ts as RFC 3339 text", () => {
    expect(conditionEvent(ev({ orderId: "o-1", n: [1, 2] }))).toEqual({
      id: "ev-1",
      name: "shipment.created",
      data: { orderId: "o-1", n: [1, 2] },
      ts: "2025-03-04T05:06:07.089Z",
    });
  });
});

describe("waitOutputJson", () => {
  it("is the event as the handler receives it, as JSON", () => {
    const json = waitOutputJson(ev({ orderId: "o-1", note: 'quote " and \\ backslash' }, { id: 'id"1', name: "n\u2028" }));
    expect(JSON.parse(json)).toEqual({
      id: 'id"1',
      name: "n\u2028",
      data: { orderId: "o-1", note: 'quote " and \\ backslash' },
      ts: "2025-03-04T05:06:07.089Z",
    });
  });
});

describe("waitMatches", () => {
  const run = ev({ orderId: "o-1", total: 10 }, { id: "run-ev", name: "order.placed" });

  it("matches any event without a condition", () => {
    expect(waitMatches(null, run, ev({}))).toBe(true);
    expect(waitMatches("", run, ev({}))).toBe(true);
  });

  it("binds the run's event as event and the candidate as async", () => {
    const condition = "event.data.orderId == async.data.orderId && async.data.total > event.data.total && event.name == 'order.placed'";
    expect(waitMatches(condition, run, ev({ orderId: "o-1", total: 11 }))).toBe(true);
    expect(waitMatches(condition, run, ev({ orderId: "o-1", total: 9 }))).toBe(false);
    expect(waitMatches(condition, run, ev({ orderId: "o-2", total: 11 }))).toBe(false);
    // A candidate lacking the field does not match, and does not throw.
    expect(waitMatches(condition, run, ev({}))).toBe(false);
    expect(waitMatches("async.ts > event.ts", run, ev({}, { tsMs: TS + 1 }))).toBe(true);
  });

  it("a stored condition that no longer compiles matches nothing", () => {
    expect(waitMatches("async.data.x ==", run, ev({ x: 1 }))).toBe(false);
    expect(waitMatches("other.data.x == 1", run, ev({ x: 1 }))).toBe(false);
  });
});
