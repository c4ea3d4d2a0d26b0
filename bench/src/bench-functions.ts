import type { StepTools, Stepwise, StepwiseFunction } from "@stepwise/sdk";
import type { RunningPerKey } from "./running-per-key.js";
import {
  CUSTOMER_KEY,
  CUSTOMER_LIMIT,
  EVENTS,
  stepOutput,
  THREE_STEP_IDS,
  type LimitedThreeStepsEvent,
  type ManyStepsEvent,
  type ManyStepsOutput,
  type OneStepEvent,
  type OneStepOutput,
  type FanOutEvent,
  type FanOutOutput,
  type LongRunEvent,
  type LongRunOutput,
  type ProbeOutput,
  type SleepEvent,
  type SleepOutput,
  type ThreeStepsEvent,
  type ThreeStepsOutput,
} from "./workload-shapes.js";

/** Counters the worker reports to the orchestrator, for the workloads it watches from outside. */
export interface SleepProgress {
  /** W4: runs that executed the step before the sleep: they are about to sleep, or asleep. */
  asleep: number;
  /** W4: runs that executed the step after the sleep. */
  woke: number;
  /** W7: bodies of the long run's sequential steps executed, over all long runs. */
  longRunSteps: number;
}

/** The body of the three-step functions (W1, W5): three steps, one after the other. */
async function threeStepsBody(run: number, step: StepTools): Promise<ThreeStepsOutput> {
  const tags: string[] = [];
  for (const id of THREE_STEP_IDS) tags.push((await step.run(id, () => stepOutput(run, id))).tag);
  return { run, tags };
}

/**
 * The benchmark's functions, all of app `bench`: the three-step function
 * (W1), the same with a concurrency limit per customer (W5), the many-step
 * function (W2), the one-step function (W3), the sleeping function (W4), the
 * fan-out (W6), the long run (W7) and the probe. Steps do no work: they return about 100 bytes of JSON, so what
 * is measured is the engine. `running` counts the limited function's
 * handler bodies executing at once, per customer.
 */
export function createBenchFunctions(stepwise: Stepwise, progress: SleepProgress, running: RunningPerKey): StepwiseFunction[] {
  const threeSteps = stepwise.createFunction(
    { id: "three-steps", triggers: [{ event: EVENTS.threeSteps }] },
    ({ event, step }): Promise<ThreeStepsOutput> => threeStepsBody((event.data as unknown as ThreeStepsEvent).run, step),
  );

  const limitedThreeSteps = stepwise.createFunction(
    {
      id: "three-steps-limited",
      triggers: [{ event: EVENTS.limitedThreeSteps }],
      concurrency: { limit: CUSTOMER_LIMIT, key: CUSTOMER_KEY },
    },
    async ({ event, step }): Promise<ThreeStepsOutput> => {
      const { run, customer } = event.data as unknown as LimitedThreeStepsEvent;
      const leave = running.enter(customer);
      try {
        return await threeStepsBody(run, step);
      } finally {
        leave();
      }
    },
  );

  const manySteps = stepwise.createFunction(
    { id: "many-steps", triggers: [{ event: EVENTS.manySteps }] },
    async ({ event, step }): Promise<ManyStepsOutput> => {
      const { run, steps } = event.data as unknown as ManyStepsEvent;
      let lastTag = "";
      for (let i = 0; i < steps; i++) lastTag = (await step.run("step", () => stepOutput(run, `s${i}`))).tag;
      return { run, steps, lastTag };
    },
  );

  const oneStep = stepwise.createFunction(
    { id: "one-step", triggers: [{ event: EVENTS.oneStep }] },
    async ({ event, step }): Promise<OneStepOutput> => {
      const { run } = event.data as unknown as OneStepEvent;
      return { run, tag: (await step.run("only", () => stepOutput(run, "only"))).tag };
    },
  );

  const sleeping = stepwise.createFunction(
    { id: "sleep", triggers: [{ event: EVENTS.sleep }] },
    async ({ event, step }): Promise<SleepOutput> => {
      const { run, sleepMs } = event.data as unknown as SleepEvent;
      // The due time is fixed in a journaled step (so the replay after the
      // sleep sees the first execution's), and the sleep is until then: the
      // lateness is the timer's own, from its due time to the step after it,
      // whatever the suspension in between took. Counted in step bodies,
      // which a replay does not run again.
      const dueAt = await step.run("before", () => {
        progress.asleep++;
        return Date.now() + sleepMs;
      });
      await step.sleepUntil("nap", new Date(dueAt));
      const latenessMs = await step.run("after", () => {
        progress.woke++;
        return Date.now() - dueAt;
      });
      return { run, latenessMs };
    },
  );

  const fanOut = stepwise.createFunction(
    { id: "fan-out", triggers: [{ event: EVENTS.fanOut }] },
    async ({ event, step }): Promise<FanOutOutput> => {
      const { run, width } = event.data as unknown as FanOutEvent;
      const outputs = await Promise.all(Array.from({ length: width }, (_, i) => step.run("leaf", () => stepOutput(run, `l${i}`))));
      const inOrder = outputs.filter((o, i) => o.tag === stepOutput(run, `l${i}`).tag).length;
      return { run, width, inOrder };
    },
  );

  const longRun = stepwise.createFunction(
    { id: "long-run", triggers: [{ event: EVENTS.longRun }] },
    async ({ event, step }): Promise<LongRunOutput> => {
      const { run, steps, sleepMs } = event.data as unknown as LongRunEvent;
      const startedAtMs = await step.run("start", () => Date.now());
      let lastTag = "";
      for (let i = 0; i < steps; i++) {
        lastTag = (
          await step.run("step", () => {
            progress.longRunSteps++;
            return stepOutput(run, `s${i}`);
          })
        ).tag;
      }
      const dueAtMs = await step.run("due", () => Date.now() + sleepMs);
      await step.sleepUntil("nap", new Date(dueAtMs));
      const resumedAtMs = await step.run("resumed", () => Date.now());
      return { run, steps, lastTag, startedAtMs, dueAtMs, resumedAtMs };
    },
  );

  const probe = stepwise.createFunction(
    { id: "probe", triggers: [{ event: EVENTS.probe }] },
    ({ step }): ProbeOutput => ({ sleep: typeof step.sleep === "function" }),
  );

  return [threeSteps, limitedThreeSteps, manySteps, oneStep, sleeping, fanOut, longRun, probe];
}
