// The function the chaos suite runs: five sequential steps with a sleep in
// the middle. Every step body writes a line to the worker's execution log
// when it starts and when it finishes, and returns a nonce naming that
// execution, so the checks can tell which execution's result the journal
// kept and which one the handler went on with.
import { setTimeout as sleep } from "node:timers/promises";
import type { Stepwise, StepwiseFunction } from "@stepwise/sdk";
import type { ExecutionLog } from "./execution-log.js";

export const CHAOS_APP_ID = "chaos";
export const CHAOS_FUNCTION_ID = "chaos-steps";
export const CHAOS_EVENT = "chaos.go";

/** The step bodies, in order; the sleep comes after SLEEP_AFTER. */
export const STEP_IDS = ["s1", "s2", "s3", "s4", "s5"] as const;
export const SLEEP_AFTER = "s2";
export const SLEEP_ID = "nap";

/** Every step key a completed run journals, in order (the SDK keys the first occurrence of an id `<id>:0`). */
export const JOURNALED_KEYS = ["s1:0", "s2:0", `${SLEEP_ID}:0`, "s3:0", "s4:0", "s5:0"] as const;

/** The data of an event. */
export interface ChaosEvent {
  n: number;
  /** How long the run sleeps, ms. */
  sleepMs: number;
}

/** What a step returns: its tag, and the execution that made it. */
export interface StepValue {
  tag: string;
  by: string;
  /** s2 only: when the sleep after it ends (ms since the epoch). */
  due?: number;
}

/** What a run returns. */
export interface ChaosOutput {
  n: number;
  tags: string[];
  /** The execution nonce of each step value the handler went on with, in STEP_IDS order. */
  by: string[];
}

/** The tag a step of run n returns. */
export function stepTag(id: string, n: number): string {
  return `${id}-${n}`;
}

/** The chaos function; each step body does `workMs()` of waiting. */
export function createChaosFunction(stepwise: Stepwise, log: ExecutionLog, workMs: () => number): StepwiseFunction {
  return stepwise.createFunction(
    { id: CHAOS_FUNCTION_ID, triggers: [{ event: CHAOS_EVENT }] },
    async ({ event, step }): Promise<ChaosOutput> => {
      const { n, sleepMs } = event.data as unknown as ChaosEvent;
      const values: StepValue[] = [];
      for (const id of STEP_IDS) {
        const value = (await step.run(id, async ({ runId, stepKey }): Promise<StepValue> => {
          const by = log.begin(runId, stepKey);
          await sleep(workMs());
          const v: StepValue = { tag: stepTag(id, n), by, ...(id === SLEEP_AFTER ? { due: Date.now() + sleepMs } : {}) };
          log.end(runId, stepKey, by);
          return v;
        })) as StepValue;
        values.push(value);
        if (id === SLEEP_AFTER) await step.sleepUntil(SLEEP_ID, new Date(value.due!));
      }
      return { n, tags: values.map((v) => v.tag), by: values.map((v) => v.by) };
    },
  );
}
