import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { ListRunsRequestSchema, WatchRunsRequestSchema } from "@stepwise/proto";
import { describe, expect, it } from "vitest";
import { refuseNul, requestTime } from "./request-checks.js";

function refusal(fn: () => unknown): ConnectError {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConnectError) return err;
    throw err;
  }
  throw new Error("not refused");
}

describe("request checks", () => {
  it("refuses a NUL in any string field, naming it by its proto name", () => {
    const list = refusal(() => refuseNul(ListRunsRequestSchema, create(ListRunsRequestSchema, { functionId: "a\u0000" })));
    expect(list.code).toBe(Code.InvalidArgument);
    expect(list.rawMessage).toBe("function_id: must not contain NUL characters");
    const watch = refusal(() => refuseNul(WatchRunsRequestSchema, create(WatchRunsRequestSchema, { eventIds: ["ok", "b\u0000"] })));
    expect(watch.rawMessage).toBe("event_ids[1]: must not contain NUL characters");
    expect(() => refuseNul(ListRunsRequestSchema, create(ListRunsRequestSchema, { functionId: "fn", eventId: "ünïcode 𝕏" }))).not.toThrow();
  });

  it("reads a time in the Timestamp range and refuses one outside it", () => {
    expect(requestTime(undefined, "created_after")).toBeUndefined();
    expect(requestTime({ seconds: 0n, nanos: 5_000_000 } as never, "created_after")?.toISOString()).toBe("1970-01-01T00:00:00.005Z");
    for (const ts of [{ seconds: -62_135_596_801n, nanos: 0 }, { seconds: 253_402_300_800n, nanos: 0 }, { seconds: 0n, nanos: -1 }, { seconds: 0n, nanos: 1_000_000_000 }]) {
      const err = refusal(() => requestTime(ts as never, "counts_since"));
      expect(err.code).toBe(Code.InvalidArgument);
      expect(err.rawMessage).toMatch(/^counts_since: not a valid time/);
    }
  });
});
