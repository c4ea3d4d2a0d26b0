import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Stepwise, StepwiseError, Worker } from "@stepwise/sdk";
import { PrivateNats, Stack, expectEveryRunCompletedOnce } from "./support/stack.js";

// Every run ends COMPLETED across a kill -9 of NATS: the journal is in
// Postgres, JetStream keeps what it acknowledged on disk, and the services
// reconnect by themselves.
describe("NATS killed and restarted under load", () => {
  const nats = new PrivateNats();
  let stack: Stack;
  let worker: Worker;
  const bodies = new Map<string, number>();
  const stepRuns = new Map<string, number>();

  beforeAll(async () => {
    await nats.start();
    stack = await new Stack({ NATS_URL: nats.url }).start();
    const client = new Stepwise({ appId: "chaos", url: stack.ingestUrl });
    const fn = client.createFunction({ id: "three-steps", triggers: [{ event: "chaos.go" }] }, async ({ event, step }) => {
      const n = String(event.data["n"]);
      for (const s of ["a", "b", "c"]) {
        await step.run(s, async () => {
          stepRuns.set(`${n}/${s}`, (stepRuns.get(`${n}/${s}`) ?? 0) + 1);
          await new Promise((r) => setTimeout(r, 20));
          return `${s}${n}`;
        });
      }
      bodies.set(n, (bodies.get(n) ?? 0) + 1);
      return n;
    });
    worker = new Worker({ url: stack.executorUrl, functions: [fn], handleSignals: false, capacity: 20 });
    await worker.connect();
  });

  afterAll(async () => {
    await worker?.close();
    await stack?.stop();
    await nats.stop();
  });

  it("completes every run whose event was accepted, each step journaled once", async () => {
    const client = new Stepwise({ appId: "chaos", url: stack.ingestUrl });
    const accepted: string[] = [];
    const send = async (n: number) => {
      // A client retries UNAVAILABLE, as it would against any service.
      for (;;) {
        try {
          const [id] = await client.send({ id: `chaos-${n}`, name: "chaos.go", data: { n } });
          accepted.push(id!);
          return;
        } catch (err) {
          if (!(err instanceof StepwiseError) || (err.code !== "unavailable" && err.code !== "deadline_exceeded")) throw err;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    };
    await Promise.all(Array.from({ length: 20 }, (_, n) => send(n)));
    await new Promise((r) => setTimeout(r, 30));
    await nats.kill();
    const duringOutage = Promise.all(Array.from({ length: 10 }, (_, n) => send(100 + n)));
    await new Promise((r) => setTimeout(r, 1000));
    await nats.start();
    await duringOutage;
    expect(accepted).toHaveLength(30);

    await expectEveryRunCompletedOnce(stack, 30, 3);
  });
});
