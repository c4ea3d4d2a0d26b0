import { describe, expect, it } from "vitest";
import { RunStatus } from "../gen/stepwise/v1/run_pb.js";
import { type ErrorData, errorFromDetail, errorToDetail } from "./error-detail.js";
import { MAX_ERROR_DEPTH } from "./limits.js";
import { RUN_STATUSES, runStatusFromProto, runStatusToProto } from "./run-status.js";
import { formatTraceParent, parseTraceParent } from "./trace-parent.js";
import { TurnBatch } from "./turn-batch.js";

function nested(depth: number): ErrorData {
  let e: ErrorData = { name: "Error", message: `level ${depth}` };
  for (let i = depth - 1; i >= 0; i--) e = { name: "Error", message: `level ${i}`, cause: e };
  return e;
}

function depthOf(e: ErrorData): number {
  let n = 0;
  for (let c = e.cause; c; c = c.cause) n++;
  return n;
}

describe("error detail", () => {
  it("keeps every field through a round trip", () => {
    const e: ErrorData = { name: "TypeError", message: "bad", stack: "at x", nonRetriable: true, cause: { name: "Error", message: "root" } };
    expect(errorFromDetail(errorToDetail(e))).toEqual(e);
  });

  it("names an unnamed error Error and drops empty fields", () => {
    const out = errorFromDetail(errorToDetail({ name: "", message: "m" }));
    expect(out).toEqual({ name: "Error", message: "m" });
  });

  it("reads a NUL or a lone surrogate as U+FFFD, which the journal's jsonb can store", () => {
    const out = errorFromDetail(errorToDetail({ name: "E\u0000", message: "cut 😀 through \uD83D", stack: "a\uDE00b", cause: { name: "Error", message: "x\u0000" } }));
    expect(out).toEqual({ name: "E\uFFFD", message: "cut 😀 through \uFFFD", stack: "a\uFFFDb", cause: { name: "Error", message: "x\uFFFD" } });
    expect(/\\u(0000|d[89a-f])/i.test(JSON.stringify(out))).toBe(false);
  });

  it("cuts causes past the depth limit, both ways", () => {
    const deep = nested(MAX_ERROR_DEPTH + 5);
    expect(depthOf(errorFromDetail(errorToDetail(deep)))).toBe(MAX_ERROR_DEPTH);
  });
});

describe("run statuses", () => {
  it("map to the contract's enum and back, for every value the enum has but UNSPECIFIED", () => {
    const enumValues = Object.values(RunStatus).filter((v): v is RunStatus => typeof v === "number" && v !== RunStatus.UNSPECIFIED);
    expect(enumValues.length).toBe(RUN_STATUSES.length);
    for (const s of RUN_STATUSES) expect(runStatusFromProto(runStatusToProto(s))).toBe(s);
    expect(runStatusFromProto(RunStatus.UNSPECIFIED)).toBeUndefined();
  });
});

describe("TurnBatch", () => {
  it("hands the items of one turn over together, in order, and the next turn's apart", async () => {
    const flushed: number[][] = [];
    const batch = new TurnBatch<number>((items) => flushed.push(items));
    batch.add(1);
    batch.add(2);
    await Promise.resolve();
    batch.add(3);
    expect(flushed).toEqual([]);
    await new Promise((r) => setImmediate(r));
    batch.add(4);
    await new Promise((r) => setImmediate(r));
    expect(flushed).toEqual([[1, 2, 3], [4]]);
  });

  it("flushNow hands over at once and leaves nothing for the turn's end", async () => {
    const flushed: string[][] = [];
    const batch = new TurnBatch<string>((items) => flushed.push(items));
    batch.add("a");
    batch.flushNow();
    batch.flushNow();
    await new Promise((r) => setImmediate(r));
    expect(flushed).toEqual([["a"]]);
  });
});

describe("traceparent", () => {
  const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

  it("parses W3C's example and formats it back", () => {
    const parsed = parseTraceParent(tp);
    expect(parsed).toEqual({ traceId: "4bf92f3577b34da6a3ce929d0e0e4736", spanId: "00f067aa0ba902b7", flags: 1 });
    expect(formatTraceParent(parsed!)).toBe(tp);
  });

  it("ignores what is empty, malformed, version ff, or names the zero trace or span", () => {
    for (const bad of [
      undefined,
      "",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
      "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
      "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
      "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
    ]) {
      expect(parseTraceParent(bad)).toBeUndefined();
    }
    // A later version may carry more fields after these.
    expect(parseTraceParent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-more")?.flags).toBe(0);
  });
});
