// Runs the order workflow end to end on the embedded engine (`stepwise dev`
// in this process): places an order, lets the run wait for its shipment,
// plays the warehouse by sending `shipment.created`, then prints the run's
// journaled steps.
//   npm run example
import { startDev } from "@stepwise/cli";
import { Worker } from "@stepwise/sdk";
import { Stepwise } from "@stepwise/sdk";
import { orderProcessing, stepwise } from "./functions.js";

const engine = await startDev({ port: 0, host: "127.0.0.1", dataDir: undefined, logLevel: "warn" });
const url = `http://127.0.0.1:${engine.port}`;
const worker = new Worker({ url, functions: [orderProcessing], handleSignals: false });
await worker.connect();
const client = new Stepwise({ appId: stepwise.appId, url });

const [eventId] = await client.send({
  name: "order.placed",
  data: { orderId: "o-1001", customerId: "c-42", items: [{ sku: "mug", quantity: 2 }], totalCents: 2400 },
});
const started = Date.now();

/** Polls the order's run until it reaches one of the states. */
async function runIn(...states: string[]) {
  for (;;) {
    const [found] = await client.listRunsOfEvent(eventId!);
    if (found) {
      const run = await client.getRun(found.id);
      if (states.includes(run.status)) return run;
    }
    if (Date.now() - started > 30_000) throw new Error(`the run did not reach ${states.join(" or ")} within 30 s`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const waiting = await runIn("WAITING", "FAILED");
console.log(`run ${waiting.id} ${waiting.status} for shipment.created after ${Date.now() - started} ms (the worker holds no slot for it)`);
await client.send({ name: "shipment.created", data: { orderId: "o-1001", trackingNumber: "TRK-778899" } });
const run = await runIn("COMPLETED", "FAILED");
console.log(`run ${run.id} ${run.status} in ${Date.now() - started} ms`);
for (const s of run.steps) {
  const ms = s.startedAt && s.endedAt ? s.endedAt.getTime() - s.startedAt.getTime() : 0;
  console.log(`  ${s.id.padEnd(18)} attempt ${s.attempt}  ${String(ms).padStart(3)} ms  ${JSON.stringify(s.output)}`);
}
console.log(`output: ${JSON.stringify(run.output)}`);
await worker.close();
await engine.stop();
