import { create } from "@bufbuild/protobuf";
import { ErrorDetailSchema, type ErrorDetail } from "../gen/stepwise/v1/error_pb.js";
import { MAX_ERROR_DEPTH } from "./limits.js";

/**
 * An error as the SDK serialises it and the journal stores it: plain data
 * that survives JSON and the wire. `cause` nests at most MAX_ERROR_DEPTH
 * levels once it crossed the wire.
 */
export interface ErrorData {
  name: string;
  message: string;
  stack?: string;
  cause?: ErrorData;
  /** Set when the error must not be retried (a NonRetriableError). */
  nonRetriable?: boolean;
}

/** The protocol's ErrorDetail as plain error data; causes past MAX_ERROR_DEPTH are dropped. */
export function errorFromDetail(e: ErrorDetail, depth = 0): ErrorData {
  const out: ErrorData = { name: storable(e.name) || "Error", message: storable(e.message) };
  if (e.stack) out.stack = storable(e.stack);
  if (e.nonRetriable) out.nonRetriable = true;
  if (e.cause && depth < MAX_ERROR_DEPTH) out.cause = errorFromDetail(e.cause, depth + 1);
  return out;
}

/**
 * Text as the journal can store it: a NUL or a lone surrogate (a message
 * cut through an emoji) becomes U+FFFD, where Postgres's jsonb would refuse
 * the whole write, and the step's result with it.
 */
function storable(text: string): string {
  return text.replace(/\u0000|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, "\uFFFD");
}

/** Plain error data as the protocol's ErrorDetail; causes past MAX_ERROR_DEPTH are dropped. */
export function errorToDetail(e: ErrorData, depth = 0): ErrorDetail {
  return create(ErrorDetailSchema, {
    name: e.name,
    message: e.message,
    stack: e.stack ?? "",
    nonRetriable: e.nonRetriable ?? false,
    ...(e.cause && depth < MAX_ERROR_DEPTH ? { cause: errorToDetail(e.cause, depth + 1) } : {}),
  });
}
