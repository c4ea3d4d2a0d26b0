import { Code, ConnectError } from "@connectrpc/connect";

/**
 * Why a call of the engine failed: the name of the status code the engine
 * (or the transport, for a connection that failed) answered with, as the
 * Connect protocol spells it. The ones worth branching on:
 *
 * - "invalid_argument": the engine refused what was sent (an empty event
 *   name, data over the limit); sending it again fails again.
 * - "not_found": what was asked for does not exist (getRun of an unknown run).
 * - "unavailable": the engine could not be reached, or went away during the
 *   call; worth trying again after a while.
 * - "deadline_exceeded": the call took too long; it may or may not have
 *   taken effect.
 * - "resource_exhausted": a limit of the engine, or of a proxy in between,
 *   was reached; worth trying again more slowly.
 * - "unauthenticated", "permission_denied": the engine does not accept the
 *   caller.
 * - "unimplemented": the engine is of a version without that call.
 * - "internal", "unknown": a fault of the engine, or an answer the SDK does
 *   not understand.
 */
export type StepwiseErrorCode =
  | "canceled"
  | "unknown"
  | "invalid_argument"
  | "deadline_exceeded"
  | "not_found"
  | "already_exists"
  | "permission_denied"
  | "resource_exhausted"
  | "failed_precondition"
  | "aborted"
  | "out_of_range"
  | "unimplemented"
  | "internal"
  | "unavailable"
  | "data_loss"
  | "unauthenticated";

const CODE_NAMES: Record<Code, StepwiseErrorCode> = {
  [Code.Canceled]: "canceled",
  [Code.Unknown]: "unknown",
  [Code.InvalidArgument]: "invalid_argument",
  [Code.DeadlineExceeded]: "deadline_exceeded",
  [Code.NotFound]: "not_found",
  [Code.AlreadyExists]: "already_exists",
  [Code.PermissionDenied]: "permission_denied",
  [Code.ResourceExhausted]: "resource_exhausted",
  [Code.FailedPrecondition]: "failed_precondition",
  [Code.Aborted]: "aborted",
  [Code.OutOfRange]: "out_of_range",
  [Code.Unimplemented]: "unimplemented",
  [Code.Internal]: "internal",
  [Code.Unavailable]: "unavailable",
  [Code.DataLoss]: "data_loss",
  [Code.Unauthenticated]: "unauthenticated",
};

/**
 * StepwiseError is what a call of the Stepwise client rejects with when it
 * fails on the wire: `send`, `getRun`, `listRunsOfEvent` and `waitForRuns`.
 * Branch on its `code`; its `message` is the engine's own, and its `cause`
 * the transport's original error. The client does not retry a failed call:
 * whether to try again is the caller's choice, by code (sending events again
 * with the same ids stores each of them once).
 *
 * Arguments the client checks before any call fail otherwise: a TypeError
 * for a bad argument, the schema's ZodError for event data that does not
 * match its schema.
 *
 * @example
 * ```ts
 * try {
 *   await stepwise.getRun(runId);
 * } catch (err) {
 *   if (err instanceof StepwiseError && err.code === "not_found") return undefined;
 *   throw err;
 * }
 * ```
 */
export class StepwiseError extends Error {
  override name = "StepwiseError";
  /** Why the call failed. */
  readonly code: StepwiseErrorCode;

  /**
   * @param message what went wrong, as the engine said it.
   * @param code why the call failed.
   * @param options.cause the error this one stands for (the transport's).
   */
  constructor(message: string, code: StepwiseErrorCode, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

/**
 * The StepwiseError a failed call of the engine rejects with: the code and
 * message of a ConnectError, which becomes its cause; any other error counts
 * as "unknown" (or "canceled" for an abort), and is the cause.
 */
export function toStepwiseError(err: unknown): StepwiseError {
  if (err instanceof StepwiseError) return err;
  const connect = ConnectError.from(err);
  const tls = tlsFailure(err);
  // A TLS handshake the client refused is "unavailable", as gRPC has it: the engine could not be reached as trusted.
  if (tls) return new StepwiseError(`TLS: ${tls} (an engine whose certificate a private CA signed needs that CA: the \`ca\` option, or STEPWISE_CA_FILE)`, "unavailable", { cause: err });
  return new StepwiseError(connect.rawMessage, codeName(connect.code), { cause: err });
}

/** The message of a certificate the client did not trust, found along the error's causes. */
function tlsFailure(err: unknown): string | undefined {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS|ERR_SSL/.test(code)) return e.message;
  }
  return undefined;
}

/** The name of a status code; "unknown" for a number that is none (a SendStream answer can carry any). */
function codeName(code: number): StepwiseErrorCode {
  return (CODE_NAMES as Partial<Record<number, StepwiseErrorCode>>)[code] ?? "unknown";
}

/** Runs a call of the engine; its failure rejects with a StepwiseError. */
export async function callEngine<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    throw toStepwiseError(err);
  }
}
