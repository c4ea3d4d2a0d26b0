/** The step tools a handler receives as `step`. */
export interface StepTools {
  /**
   * Runs fn as a durable step: its result is journaled and, on any later
   * execution of the run, returned without running fn again. The handler
   * proceeds only once the result is committed. The result must be JSON
   * (it is returned as JSON would decode it, on the first run too).
   *
   * A step id may repeat (in a loop); each occurrence is its own step.
   *
   * @example
   * ```ts
   * const payment = await step.run("process-payment", () => charge(order));
   * ```
   */
  run<T>(id: string, fn: () => Promise<T> | T): Promise<Jsonified<T>>;
}

/** What a value becomes after a JSON round trip, roughly. */
export type Jsonified<T> = T extends undefined | void
  ? null
  : T extends { toJSON(): infer J }
    ? J
    : T extends (infer U)[]
      ? Jsonified<U>[]
      : T extends object
        ? { [K in keyof T]: Jsonified<T[K]> }
        : T;
