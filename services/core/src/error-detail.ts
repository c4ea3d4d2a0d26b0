import { create } from "@bufbuild/protobuf";
import { ErrorDetailSchema, type ErrorDetail } from "@stepwise/proto";
import type { StoredError } from "./journal-store.js";

const MAX_DEPTH = 8;

/** Converts an error of the worker protocol to its journaled form. */
export function errorFromProto(e: ErrorDetail, depth = 0): StoredError {
  const out: StoredError = { name: e.name || "Error", message: e.message };
  if (e.stack) out.stack = e.stack;
  if (e.nonRetriable) out.nonRetriable = true;
  if (e.cause && depth < MAX_DEPTH) out.cause = errorFromProto(e.cause, depth + 1);
  return out;
}

/** Converts a journaled error to its protocol form. */
export function errorToProto(e: StoredError, depth = 0): ErrorDetail {
  return create(ErrorDetailSchema, {
    name: e.name,
    message: e.message,
    stack: e.stack ?? "",
    nonRetriable: e.nonRetriable ?? false,
    ...(e.cause && depth < MAX_DEPTH ? { cause: errorToProto(e.cause, depth + 1) } : {}),
  });
}
