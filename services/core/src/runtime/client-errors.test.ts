import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { boundedMessage, clientError, MAX_ERROR_MESSAGE_LENGTH, quote } from "./client-errors.js";

describe("client errors", () => {
  it("quotes a value as JSON, cut to 64 characters with its length said", () => {
    expect(quote("run-1")).toBe('"run-1"');
    expect(quote("x".repeat(1_000_000))).toBe(`"${"x".repeat(64)}"… (1000000 characters)`);
    // A pair cut in two does not leave a lone surrogate.
    expect(quote(`${"a".repeat(63)}𝕏`)).toBe(`"${"a".repeat(63)}\uFFFD"… (65 characters)`);
  });

  it("bounds a message at MAX_ERROR_MESSAGE_LENGTH, saying how long it was", () => {
    expect(boundedMessage("short")).toBe("short");
    const long = boundedMessage("m".repeat(5000));
    expect(long.length).toBe(MAX_ERROR_MESSAGE_LENGTH);
    expect(long.endsWith(" … (5000 characters)")).toBe(true);
  });

  it("answers connect-es's INTERNAL input failures INVALID_ARGUMENT and leaves other errors as they are", () => {
    for (const message of ["parse binary: premature EOF", "received compressed envelope, but do not know how to decompress", "decompression failed"]) {
      const out = clientError(new ConnectError(message, Code.Internal)) as ConnectError;
      expect(out.code).toBe(Code.InvalidArgument);
      expect(out.rawMessage).toBe(message);
    }
    const internal = new ConnectError("the database is gone", Code.Internal);
    expect(clientError(internal)).toBe(internal);
    const notFound = new ConnectError("run \"x\" not found", Code.NotFound);
    expect(clientError(notFound)).toBe(notFound);
    const plain = new Error("not a ConnectError");
    expect(clientError(plain)).toBe(plain);
  });

  it("bounds a long message and replaces lone surrogates, keeping the code", () => {
    const long = clientError(new ConnectError("y".repeat(2000), Code.NotFound)) as ConnectError;
    expect(long.code).toBe(Code.NotFound);
    expect(long.rawMessage.length).toBe(MAX_ERROR_MESSAGE_LENGTH);
    const lone = clientError(new ConnectError("found \uD83D but expecting", Code.InvalidArgument)) as ConnectError;
    expect(lone.rawMessage).toBe("found \uFFFD but expecting");
    expect(() => encodeURIComponent(lone.rawMessage)).not.toThrow();
  });
});
