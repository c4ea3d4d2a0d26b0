import { Code, ConnectError } from "@connectrpc/connect";
import { ID_PATTERN, type FunctionRegistration } from "@stepwise/core";
import type { Register } from "@stepwise/proto";

/** Most runs one worker may hold at once. */
export const MAX_CAPACITY = 10_000;

/**
 * Validates a worker's registration and returns its functions in the form
 * the journal stores. Throws INVALID_ARGUMENT naming the function and field.
 */
export function validateRegistration(reg: Register): FunctionRegistration[] {
  if (!ID_PATTERN.test(reg.appId)) {
    throw new ConnectError(
      `register.app_id: ${JSON.stringify(reg.appId)} must be 1-128 letters, digits, "-" or "_"`,
      Code.InvalidArgument,
    );
  }
  if (reg.capacity < 1 || reg.capacity > MAX_CAPACITY) {
    throw new ConnectError(`register.capacity: must be 1 to ${MAX_CAPACITY}`, Code.InvalidArgument);
  }
  if (reg.functions.length === 0) {
    throw new ConnectError("register.functions: at least one function is required", Code.InvalidArgument);
  }
  const seen = new Set<string>();
  return reg.functions.map((fn) => {
    if (!ID_PATTERN.test(fn.id)) {
      throw new ConnectError(
        `function ${JSON.stringify(fn.id)}: id must be 1-128 letters, digits, "-" or "_"`,
        Code.InvalidArgument,
      );
    }
    if (seen.has(fn.id)) {
      throw new ConnectError(`function ${JSON.stringify(fn.id)}: registered twice`, Code.InvalidArgument);
    }
    seen.add(fn.id);
    if (fn.triggers.length === 0) {
      throw new ConnectError(`function ${JSON.stringify(fn.id)}: triggers: at least one is required`, Code.InvalidArgument);
    }
    const events: string[] = [];
    fn.triggers.forEach((t, i) => {
      if (t.kind.case !== "event" || t.kind.value.event.length === 0 || t.kind.value.event.length > 256) {
        throw new ConnectError(
          `function ${JSON.stringify(fn.id)}: triggers[${i}].event: must be an event name of 1-256 characters`,
          Code.InvalidArgument,
        );
      }
      events.push(t.kind.value.event);
    });
    return {
      id: fn.id,
      name: fn.name || fn.id,
      eventTriggers: events,
      config: {
        triggers: events.map((event) => ({ event })),
        ...(fn.retries !== undefined ? { retries: fn.retries } : {}),
      },
    };
  });
}
