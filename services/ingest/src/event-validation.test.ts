import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { SendRequestSchema, type EventSchema } from "@stepwise/proto";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { EVENT_LIMITS, toEventRecords } from "./event-validation.js";

type EventInit = MessageInitShape<typeof EventSchema>;

const NOW = Date.UTC(2025, 0, 2, 3, 4, 5, 678);

function request(events: EventInit[]) {
  return create(SendRequestSchema, { events });
}

/** Runs toEventRecords and returns the ConnectError it throws. */
function rejection(events: EventInit[]): ConnectError {
  try {
    toEventRecords(request(events), NOW);
  } catch (err) {
    expect(err).toBeInstanceOf(ConnectError);
    return err as ConnectError;
  }
  throw new Error("toEventRecords accepted the request");
}

function expectInvalid(events: EventInit[], message: string | RegExp): void {
  const err = rejection(events);
  expect(err.code).toBe(Code.InvalidArgument);
  if (typeof message === "string") expect(err.rawMessage).toBe(message);
  else expect(err.rawMessage).toMatch(message);
}

const ok = (name = "order.placed"): EventInit => ({ name, data: { n: 1 } });

describe("toEventRecords", () => {
  it("keeps given ids and assigns ids where missing", () => {
    const records = toEventRecords(request([{ id: "ev-1", name: "a" }, { name: "b" }, { id: "ev-3", name: "c" }]), NOW);
    expect(records).toHaveLength(3);
    expect(records[0]?.id).toBe("ev-1");
    expect(records[2]?.id).toBe("ev-3");
    const assigned = records[1]?.id ?? "";
    // A UUIDv7: time-ordered, version nibble 7.
    expect(assigned).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(records.map((r) => r.name)).toEqual(["a", "b", "c"]);
  });

  it("assigns unique ids that sort in the order they were assigned", () => {
    const events = Array.from({ length: 500 }, (_, i) => ({ name: `e${i}` }));
    const ids = toEventRecords(request(events), NOW).map((r) => r.id);
    expect(new Set(ids).size).toBe(500);
    expect([...ids].sort()).toEqual(ids);
  });

  it("assigns later ids to later calls", async () => {
    const [first] = toEventRecords(request([{ name: "a" }]));
    await new Promise((r) => setTimeout(r, 5));
    const [second] = toEventRecords(request([{ name: "a" }]));
    expect(first && second && first.id < second.id).toBe(true);
  });

  it("encodes data as JSON once", () => {
    const data = { order: { id: "o-1", items: [1, 2, 3], note: "quote \" and ünïcode" }, paid: true, total: 9.5, none: null };
    const [rec] = toEventRecords(request([{ name: "order.placed", data }]), NOW);
    expect(typeof rec?.dataJson).toBe("string");
    // Decoding once gives the object back: it is not JSON of JSON.
    expect(JSON.parse(rec?.dataJson ?? "")).toEqual(data);
  });

  it("encodes missing data as an empty object", () => {
    const [rec] = toEventRecords(request([{ name: "order.placed" }]), NOW);
    expect(rec?.dataJson).toBe("{}");
  });

  it("uses ts when given, else now, and records now as the receipt time", () => {
    const ts = Date.UTC(2024, 5, 6, 7, 8, 9, 123);
    const [given, missing] = toEventRecords(
      request([
        { name: "a", ts: timestampFromMs(ts) },
        { name: "b" },
      ]),
      NOW,
    );
    expect(given?.tsMs).toBe(BigInt(ts));
    expect(missing?.tsMs).toBe(BigInt(NOW));
    expect(given?.receivedAtMs).toBe(BigInt(NOW));
    expect(missing?.receivedAtMs).toBe(BigInt(NOW));
  });

  it("uses the clock when no now is passed", () => {
    const before = Date.now();
    const [rec] = toEventRecords(request([{ name: "a" }]));
    const after = Date.now();
    expect(Number(rec?.tsMs)).toBeGreaterThanOrEqual(before);
    expect(Number(rec?.tsMs)).toBeLessThanOrEqual(after);
  });

  it("accepts values at every limit", () => {
    const bigData = { s: "x".repeat(EVENT_LIMITS.maxDataBytes - '{"s":""}'.length) };
    expect(Buffer.byteLength(JSON.stringify(bigData))).toBe(EVENT_LIMITS.maxDataBytes);
    const events: EventInit[] = Array.from({ length: EVENT_LIMITS.maxEventsPerSend }, (_, i) => ok(`e${i}`));
    events[0] = { id: "i".repeat(128), name: "n".repeat(256), data: bigData };
    events[1] = { id: "!~Ab-_.:/09", name: "with space and ünïcode" };
    const records = toEventRecords(request(events), NOW);
    expect(records).toHaveLength(5_000);
    expect(records[0]?.id).toBe("i".repeat(128));
    expect(records[0]?.dataJson.length).toBe(EVENT_LIMITS.maxDataBytes);
    expect(records[1]?.id).toBe("!~Ab-_.:/09");
  });

  describe("rejects with INVALID_ARGUMENT", () => {
    it("no events", () => {
      expectInvalid([], "events: at least one event is required");
    });

    it("5,001 events", () => {
      const events = Array.from({ length: 5_001 }, (_, i) => ok(`e${i}`));
      expectInvalid(events, /^events: 5001 events in one call, at most 5000 are accepted$/);
    });

    it("an empty name", () => {
      expectInvalid([ok(), ok(), { name: "" }], "events[2].name: must not be empty");
    });

    it("a 257-character name", () => {
      expectInvalid([ok(), { name: "n".repeat(257) }], "events[1].name: must be at most 256 characters");
    });

    it("an id over 128 characters", () => {
      expectInvalid([{ id: "i".repeat(129), name: "a" }], "events[0].id: must be at most 128 characters");
    });

    it("an id with a space", () => {
      expectInvalid([ok(), ok(), ok(), { id: "ev 4", name: "a" }], "events[3].id: must be printable ASCII without spaces");
    });

    it("an id with a non-ASCII or control character", () => {
      expectInvalid([{ id: "évent", name: "a" }], /^events\[0\]\.id: /);
      expectInvalid([{ id: "ev\n1", name: "a" }], /^events\[0\]\.id: /);
    });

    it("data over 512 KiB once encoded", () => {
      const data = { s: "x".repeat(EVENT_LIMITS.maxDataBytes - '{"s":""}'.length + 1) };
      expectInvalid([ok(), { name: "big", data }], `events[1].data: ${EVENT_LIMITS.maxDataBytes + 1} bytes encoded, at most 524288 are accepted`);
    });

    it("data over 512 KiB in bytes though not in characters", () => {
      // 200k three-byte characters: 600 KB of UTF-8 in 200k UTF-16 units.
      const data = { s: "€".repeat(200_000) };
      expectInvalid([{ name: "big", data }], /^events\[0\]\.data: \d+ bytes encoded/);
    });

    it("names the first offending event when several are bad", () => {
      expectInvalid([ok(), { name: "" }, { id: "a b", name: "" }], /^events\[1\]\./);
    });
  });

  it("rejects data Postgres cannot store: a NUL character or a lone surrogate", () => {
    for (const bad of ["a\u0000b", "x\ud800y"]) {
      const req = create(SendRequestSchema, { events: [{ name: "ok" }, { name: "n", data: { v: bad } }] });
      expect(() => toEventRecords(req)).toThrow(/events\[1\]\.data: contains a NUL character or a lone surrogate/);
    }
    // A backslash followed by "u0000" is ordinary text, and a well-formed surrogate pair is fine.
    const ok = create(SendRequestSchema, { events: [{ name: "n", data: { v: "\\u0000", e: "😀" } }] });
    expect(toEventRecords(ok)).toHaveLength(1);
    const nulName = create(SendRequestSchema, { events: [{ name: "a\u0000" }] });
    expect(() => toEventRecords(nulName)).toThrow(/events\[0\]\.name: must not contain a NUL character/);
    // Found by the fuzz: such a name was accepted and then never stored (jsonb refuses the escape).
    for (const name of ["a\uD800", "\uDFFFb"]) {
      expect(() => toEventRecords(create(SendRequestSchema, { events: [{ name }] }))).toThrow(/events\[0\]\.name: must not contain a lone surrogate/);
    }
    expect(toEventRecords(create(SendRequestSchema, { events: [{ name: "order 😀" }] }))).toHaveLength(1);
  });
});

describe("event time bounds", () => {
  it("refuses a ts outside the years 0001 to 9999 with INVALID_ARGUMENT naming the event", () => {
    for (const seconds of [-62135596801n, 253402300800n, 9_000_000_000_000n]) {
      const req = create(SendRequestSchema, { events: [{ name: "ok" }, { name: "far", ts: { seconds, nanos: 0 } }] });
      expect(() => toEventRecords(req)).toThrow(/events\[1\]\.ts: must be between the years 0001 and 9999/);
    }
    const edge = create(SendRequestSchema, { events: [{ name: "edge", ts: { seconds: 253402300799n, nanos: 0 } }] });
    expect(toEventRecords(edge)[0]?.tsMs).toBe(253402300799000n);
  });
});
