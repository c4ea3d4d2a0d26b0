import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Stepwise, Worker } from "@stepwise/sdk";
import { PrivatePostgres, Stack, eventually, expectEveryRunCompletedOnce } from "./support/stack.js";

// Every run ends COMPLETED across a kill -9 of Postgres in the middle of
// runs: journal writes that failed are not acknowledged, so the handler
// never proceeds past them; leases lapse and the runs resume from what was
// committed once Postgres is back.
describe("Postgres killed and restarted under load", () => {
  const postgres = new PrivatePostgres();
  let stack: Stack;
  let worker: Worker;

  beforeAll(async () => {
    await postgres.init();
    await postgres.start();
    stack = await new Stack({ DATABASE_URL: postgres.url }).start();
    const client = new Stepwise({ appId: "pgchaos", url: stack.ingestUrl });
    const fn = client.createFunction({ id: "three-steps", triggers: [{ event: "pg.go" }] }, async ({ event, step }) => {
      const n = String(event.data["n"]);
      for (const s of ["a", "b", "c"]) {
        await step.run(s, async () => {
          await new Promise((r) => setTimeout(r, 30));
          return `${s}${n}`;
        });
      }
      return n;
    });
    worker = new Worker({ url: stack.executorUrl, functions: [fn], handleSignals: false, capacity: 20, maxReconnectDelayMs: 500 });
    await worker.connect();
  });

  afterAll(async () => {
    await worker?.kill();
    await stack?.stop().catch(() => {});
    await postgres.stop();
  });

  it("completes every accepted run, each step journaled once", async () => {
    const client = new Stepwise({ appId: "pgchaos", url: stack.ingestUrl });
    const ids = await client.send(Array.from({ length: 20 }, (_, n) => ({ id: `pg-${n}`, name: "pg.go", data: { n } })));
    expect(ids).toHaveLength(20);
    // Let some runs get going, then crash Postgres mid-run.
    await eventually(async () => {
      const rows = await stack.query<{ n: string }>("SELECT count(*) AS n FROM steps");
      return Number(rows[0]!.n) >= 5 ? true : undefined;
    }, 20_000, "some steps to be journaled");
    await postgres.kill();
    // Events keep being accepted while Postgres is down: ingest only needs JetStream.
    const during = await client.send(Array.from({ length: 10 }, (_, n) => ({ id: `pg-${100 + n}`, name: "pg.go", data: { n: 100 + n } })));
    expect(during).toHaveLength(10);
    await new Promise((r) => setTimeout(r, 1500));
    await postgres.start();

    await expectEveryRunCompletedOnce(stack, 30, 3);
  });
});
