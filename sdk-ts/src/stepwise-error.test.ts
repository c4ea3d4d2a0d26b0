import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { Stepwise } from "./client.js";
import { deserializeError, serializeError } from "./errors.js";
import { StepwiseError as ExportedStepwiseError } from "./index.js";
import { callEngine, StepwiseError, toStepwiseError, type StepwiseErrorCode } from "./stepwise-error.js";

describe("StepwiseError", () => {
  it("is an Error named StepwiseError with its code, message and cause", () => {
    const cause = new ConnectError("run r-1 not found", Code.NotFound);
    const err = new StepwiseError("run r-1 not found", "not_found", { cause });
    expect(err).toBeInstanceOf(Error);
    expect(err).toBeInstanceOf(StepwiseError);
    expect(err).toBeInstanceOf(ExportedStepwiseError);
    expect(err.name).toBe("StepwiseError");
    expect(err.code).toBe("not_found");
    expect(err.message).toBe("run r-1 not found");
    expect(err.cause).toBe(cause);
    expect(String(err)).toBe("StepwiseError: run r-1 not found");
  });

  it("has no cause when none is given", () => {
    expect(new StepwiseError("x", "internal").cause).toBeUndefined();
  });

  it("keeps its name, message and cause through the journal's serialisation", () => {
    const err = toStepwiseError(new ConnectError("ingest went away", Code.Unavailable));
    const back = deserializeError(serializeError(err));
    expect(back.name).toBe("StepwiseError");
    expect(back.message).toBe("ingest went away");
    expect((back.cause as Error).name).toBe("ConnectError");
    expect((back.cause as Error).message).toBe("[unavailable] ingest went away");
  });
});

describe("toStepwiseError", () => {
  const names: Array<[Code, StepwiseErrorCode]> = [
    [Code.Canceled, "canceled"],
    [Code.Unknown, "unknown"],
    [Code.InvalidArgument, "invalid_argument"],
    [Code.DeadlineExceeded, "deadline_exceeded"],
    [Code.NotFound, "not_found"],
    [Code.AlreadyExists, "already_exists"],
    [Code.PermissionDenied, "permission_denied"],
    [Code.ResourceExhausted, "resource_exhausted"],
    [Code.FailedPrecondition, "failed_precondition"],
    [Code.Aborted, "aborted"],
    [Code.OutOfRange, "out_of_range"],
    [Code.Unimplemented, "unimplemented"],
    [Code.Internal, "internal"],
    [Code.Unavailable, "unavailable"],
    [Code.DataLoss, "data_loss"],
    [Code.Unauthenticated, "unauthenticated"],
  ];

  it.each(names)("maps Connect code %i to %j, with the server's message and the ConnectError as cause", (code, name) => {
    const connect = new ConnectError("what the server said", code);
    const err = toStepwiseError(connect);
    expect(err).toBeInstanceOf(StepwiseError);
    expect(err.name).toBe("StepwiseError");
    expect(err.code).toBe(name);
    expect(err.message).toBe("what the server said");
    expect(err.cause).toBe(connect);
  });

  it("names every Connect code, each differently", () => {
    const numeric = Object.values(Code).filter((c): c is Code => typeof c === "number");
    expect(numeric.map((c) => names.find(([n]) => n === c)?.[1])).not.toContain(undefined);
    expect(new Set(names.map(([, n]) => n)).size).toBe(numeric.length);
  });

  it("maps a code no Connect version has to unknown", () => {
    expect(toStepwiseError(new ConnectError("odd", 99 as Code)).code).toBe("unknown");
  });

  it("makes another error unknown, an abort canceled, and keeps it as the cause", () => {
    const plain = new Error("socket hang up");
    const fromPlain = toStepwiseError(plain);
    expect(fromPlain).toMatchObject({ name: "StepwiseError", code: "unknown", message: "socket hang up" });
    expect(fromPlain.cause).toBe(plain);

    const abort = new DOMException("the operation was aborted", "AbortError");
    const fromAbort = toStepwiseError(abort);
    expect(fromAbort).toMatchObject({ code: "canceled", message: "the operation was aborted" });
    expect(fromAbort.cause).toBe(abort);

    expect(toStepwiseError("no error at all")).toMatchObject({ code: "unknown", message: "no error at all" });
  });

  it("gives a StepwiseError back as it is", () => {
    const err = new StepwiseError("x", "not_found");
    expect(toStepwiseError(err)).toBe(err);
  });
});

describe("callEngine", () => {
  it("resolves with the call's answer", async () => {
    expect(await callEngine(async () => 7)).toBe(7);
  });

  it("rejects with a StepwiseError for a failed call, also one that throws before it returns a promise", async () => {
    await expect(callEngine(() => Promise.reject(new ConnectError("nope", Code.PermissionDenied)))).rejects.toMatchObject({
      name: "StepwiseError",
      code: "permission_denied",
      message: "nope",
    });
    await expect(
      callEngine(() => {
        throw new ConnectError("refused", Code.InvalidArgument);
      }),
    ).rejects.toBeInstanceOf(StepwiseError);
  });
});

// Nothing listens on port 1: every call of the client fails on the wire.
describe("the client's calls against an engine it cannot reach", () => {
  const stepwise = new Stepwise({ appId: "unreachable", url: "http://127.0.0.1:1" });

  async function failure(call: Promise<unknown>): Promise<StepwiseError> {
    const err = await call.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(StepwiseError);
    const e = err as StepwiseError;
    expect(e.name).toBe("StepwiseError");
    expect(e.code).toBe("unavailable");
    expect(e.cause).toBeInstanceOf(ConnectError);
    return e;
  }

  it("send rejects with a StepwiseError, code unavailable", async () => {
    await failure(stepwise.send({ name: "e", data: {} }));
    stepwise.close();
  });

  it("getRun, listRunsOfEvent and waitForRuns reject with a StepwiseError, code unavailable", async () => {
    await failure(stepwise.getRun("r-1"));
    await failure(stepwise.listRunsOfEvent("ev-1"));
    // Over the longest wait: straight to WaitForRuns, without the WatchRuns stream.
    await failure(stepwise.waitForRuns("ev-1", { timeoutMs: 300_001 }));
    // Through the WatchRuns stream, which retries until the timeout, then reads the runs as they are.
    await failure(stepwise.waitForRuns("ev-1", { timeoutMs: 200 }));
    stepwise.close();
  });
});
