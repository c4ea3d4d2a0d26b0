// The benchmark's functions as a DBOS Transact app: the same shapes as
// Stepwise's (bench/src/bench-functions.ts), each step a DBOS.runStep that
// returns about 100 bytes of JSON, checkpointed in Postgres. As DBOS apps
// are deployed, the workflows run inside the app's own HTTP server: POST
// /<workflow> runs one and answers with its result. Configured by
// DBOS_SYSTEM_DATABASE_URL, BENCH_DBOS_SCHEMA and PORT.
import { createServer } from "node:http";
import { DBOS } from "@dbos-inc/dbos-sdk";
import {
  stepOutput,
  THREE_STEP_IDS,
  type ManyStepsEvent,
  type ManyStepsOutput,
  type OneStepEvent,
  type OneStepOutput,
  type ThreeStepsEvent,
  type ThreeStepsOutput,
} from "../../dist/workload-shapes.js";

DBOS.setConfig({
  name: "stepwise-bench",
  systemDatabaseUrl: process.env["DBOS_SYSTEM_DATABASE_URL"]!,
  systemDatabaseSchemaName: process.env["BENCH_DBOS_SCHEMA"]!,
  logLevel: "warn",
});

const threeSteps = DBOS.registerWorkflow(
  async ({ run }: ThreeStepsEvent): Promise<ThreeStepsOutput> => {
    const tags: string[] = [];
    for (const id of THREE_STEP_IDS) tags.push((await DBOS.runStep(async () => stepOutput(run, id), { name: id })).tag);
    return { run, tags };
  },
  { name: "threeSteps" },
);

const manySteps = DBOS.registerWorkflow(
  async ({ run, steps }: ManyStepsEvent): Promise<ManyStepsOutput> => {
    let lastTag = "";
    for (let i = 0; i < steps; i++) lastTag = (await DBOS.runStep(async () => stepOutput(run, `s${i}`), { name: "step" })).tag;
    return { run, steps, lastTag };
  },
  { name: "manySteps" },
);

const oneStep = DBOS.registerWorkflow(
  async ({ run }: OneStepEvent): Promise<OneStepOutput> => ({
    run,
    tag: (await DBOS.runStep(async () => stepOutput(run, "only"), { name: "only" })).tag,
  }),
  { name: "oneStep" },
);

const workflows: Record<string, (input: never) => Promise<unknown>> = { threeSteps, manySteps, oneStep };

await DBOS.launch();
const server = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on("data", (c: Buffer) => chunks.push(c));
  req.on("end", () => {
    const workflow = workflows[(req.url ?? "").slice(1)];
    if (req.method !== "POST" || !workflow) {
      res.writeHead(404).end();
      return;
    }
    workflow(JSON.parse(Buffer.concat(chunks).toString() || "{}") as never).then(
      (output) => res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(output)),
      (err: unknown) => res.writeHead(500).end(String(err)),
    );
  });
});
server.keepAliveTimeout = 60_000;
server.listen(Number(process.env["PORT"]), "127.0.0.1", () => process.stdout.write(`dbos app listening on ${process.env["PORT"]}\n`));
process.once("SIGTERM", () => {
  server.close();
  DBOS.shutdown().then(
    () => process.exit(0),
    () => process.exit(1),
  );
});
