/**
 * The limits of the contract, as numbers both sides check: the SDK before it
 * sends, the services when they receive. The .proto comments state the same
 * values for other languages; change both together.
 */

/** App and function ids: 1-128 letters, digits, "-" or "_". */
export const ID_PATTERN = /^[A-Za-z0-9_-]{1,128}$/;

/** Longest app or function id. */
export const MAX_ID_LENGTH = 128;

/** Longest event name (an event's `name`, a trigger's or a wait's `event`). */
export const MAX_EVENT_NAME_LENGTH = 256;

/** Longest event id a client may give an event it sends. */
export const MAX_SENT_EVENT_ID_LENGTH = 128;

/**
 * Longest event id a query accepts (ListRuns, WaitForRuns, WatchRuns): ids
 * the engine makes itself (a cron tick's, a failure run's) may be longer
 * than a client's.
 */
export const MAX_EVENT_ID_LENGTH = 256;

/** Most events one Send takes. */
export const MAX_EVENTS_PER_SEND = 5_000;

/** Largest event data, in bytes of JSON. */
export const MAX_EVENT_DATA_BYTES = 512 * 1024;

/**
 * Largest JSON a step or a handler may return, in bytes of UTF-8. SDKs check
 * it before they send: a larger value fails its step (or the run) with a
 * non-retriable error instead of reaching the executor.
 */
export const MAX_OUTPUT_BYTES = 4 * 1024 * 1024;

/** Longest reason a CancelRun may give. */
export const MAX_CANCEL_REASON_LENGTH = 1_024;

/** Longest step key (`<step id>:<occurrence>`). */
export const MAX_STEP_KEY_LENGTH = 1_024;

/** Retries of a step or a handler when the function sets none: 4, so 5 attempts. */
export const DEFAULT_RETRIES = 4;

/** Most retries a function or a step may ask for. */
export const MAX_RETRIES = 20;

/** Most runs one worker may hold at once (`Register.capacity`). */
export const MAX_CAPACITY = 10_000;

/** Longest CEL expression (a trigger's or a wait's `if`). */
export const MAX_CONDITION_LENGTH = 4_096;

/** Most awaits (timers and waits) one suspension may carry. */
export const MAX_AWAITS = 1_000;

/** Longest a run may be suspended for: a year and a day, so a one-year sleep fits with room for clock skew. */
export const MAX_SUSPEND_MS = 366 * 24 * 3_600_000;

/** Longest a WaitForRuns call may wait (`timeout_ms`). */
export const MAX_WAIT_MS = 300_000;

/** Levels of `cause` an error carries across the wire; deeper causes are cut. */
export const MAX_ERROR_DEPTH = 8;

/** Most cancelOn rules a function may declare (`FunctionConfig.cancel_on`). */
export const MAX_CANCEL_ON = 8;

/** Most concurrency limits a function may declare (`FunctionConfig.concurrency`). */
export const MAX_CONCURRENCY_LIMITS = 2;

/** Largest concurrency limit of one key. */
export const MAX_CONCURRENCY = 10_000;

/** Most events in one run of a function with batchEvents (`BatchEvents.max_size`). */
export const MAX_BATCH_SIZE = 100;
