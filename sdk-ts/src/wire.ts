import { create } from "@bufbuild/protobuf";
import { ErrorDetailSchema, type ErrorDetail } from "@stepwise/proto";
import type { SerializedError } from "./errors.js";

/** SerializedError to the protocol's ErrorDetail. */
export function toErrorDetail(e: SerializedError): ErrorDetail {
  return create(ErrorDetailSchema, {
    name: e.name,
    message: e.message,
    stack: e.stack ?? "",
    nonRetriable: e.nonRetriable ?? false,
    ...(e.cause ? { cause: toErrorDetail(e.cause) } : {}),
  });
}

/** The protocol's ErrorDetail to a SerializedError. */
export function fromErrorDetail(e: ErrorDetail): SerializedError {
  const out: SerializedError = { name: e.name || "Error", message: e.message };
  if (e.stack) out.stack = e.stack;
  if (e.nonRetriable) out.nonRetriable = true;
  if (e.cause) out.cause = fromErrorDetail(e.cause);
  return out;
}

/**
 * A request stream for a Connect client: an async generator, whose return()
 * and throw() give promises as Connect expects (a pushable's do not).
 */
export async function* requestStream<T>(messages: AsyncIterable<T>): AsyncGenerator<T> {
  yield* messages;
}
