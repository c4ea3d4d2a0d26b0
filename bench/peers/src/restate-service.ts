// The benchmark's functions as a Restate service: the same shapes as
// Stepwise's (bench/src/bench-functions.ts), each step a ctx.run that
// returns about 100 bytes of JSON. Served over HTTP/2 on RESTATE_SERVICE_PORT.
import "./promise-with-resolvers.js";
import * as restate from "@restatedev/restate-sdk";
import {
  stepOutput,
  THREE_STEP_IDS,
  type ManyStepsEvent,
  type ManyStepsOutput,
  type OneStepEvent,
  type OneStepOutput,
  type StepOutput,
  type ThreeStepsEvent,
  type ThreeStepsOutput,
} from "../../dist/workload-shapes.js";

const bench = restate.service({
  // restate-driver.ts calls the handlers at /bench/<handler> on the ingress.
  name: "bench",
  handlers: {
    threeSteps: async (ctx: restate.Context, { run }: ThreeStepsEvent): Promise<ThreeStepsOutput> => {
      const tags: string[] = [];
      for (const id of THREE_STEP_IDS) tags.push((await ctx.run(id, (): StepOutput => stepOutput(run, id))).tag);
      return { run, tags };
    },
    manySteps: async (ctx: restate.Context, { run, steps }: ManyStepsEvent): Promise<ManyStepsOutput> => {
      let lastTag = "";
      for (let i = 0; i < steps; i++) lastTag = (await ctx.run("step", (): StepOutput => stepOutput(run, `s${i}`))).tag;
      return { run, steps, lastTag };
    },
    oneStep: async (ctx: restate.Context, { run }: OneStepEvent): Promise<OneStepOutput> => {
      return { run, tag: (await ctx.run("only", (): StepOutput => stepOutput(run, "only"))).tag };
    },
  },
});

const port = await restate.serve({ services: [bench], port: Number(process.env["RESTATE_SERVICE_PORT"] ?? 9080) });
process.stdout.write(`restate service listening on ${port}\n`);
process.once("SIGTERM", () => process.exit(0));
