import { errorFromDetail, MAX_OUTPUT_BYTES, type JournalEntry } from "@stepwise/proto";
import { deserializeError, NonRetriableError, type SerializedError, StepError } from "./errors.js";

// A step's outcome: encoded for the journal when it ran, read back from the
// journal when it is replayed, and settled into what the handler gets.

/**
 * JSON that Postgres's jsonb refuses: an escaped NUL (\u0000) or lone
 * surrogate (JSON.stringify escapes those; well-formed pairs stay raw), not
 * preceded by an escaping backslash.
 */
const UNSTORABLE_JSON = /(?:^|[^\\])(?:\\\\)*\\u(?:0000|d[89a-f][0-9a-f]{2})/i;

export type Outcome = { outputJson: string } | { error: SerializedError };

/** A step's result as the handler gets it: the value, or a StepError. */
export function settle(stepId: string, outcome: Outcome): unknown {
  if ("error" in outcome) throw new StepError(stepId, deserializeError(outcome.error));
  return JSON.parse(outcome.outputJson);
}

/** A step's or the handler's value as JSON the journal can store; a NonRetriableError when it cannot. */
export function encodeOutput(value: unknown, what: string): Outcome {
  let json: string | undefined;
  try {
    json = JSON.stringify(value);
  } catch (err) {
    throw new NonRetriableError(`${what} is not JSON: ${err instanceof Error ? err.message : String(err)}`);
  }
  json ??= "null";
  if (UNSTORABLE_JSON.test(json)) {
    throw new NonRetriableError(`${what} contains a NUL character or a lone surrogate, which cannot be journaled`);
  }
  if (json.length > MAX_OUTPUT_BYTES / 4 && Buffer.byteLength(json) > MAX_OUTPUT_BYTES) {
    throw new NonRetriableError(`${what} is ${Buffer.byteLength(json)} bytes of JSON, more than the ${MAX_OUTPUT_BYTES} allowed`);
  }
  return { outputJson: json };
}

/** A journal entry of StartRun as an outcome. */
export function fromJournalEntry(e: JournalEntry): Outcome {
  if (e.result.case === "error") return { error: errorFromDetail(e.result.value) };
  return { outputJson: e.result.case === "outputJson" ? e.result.value : "null" };
}
