import { create } from "@bufbuild/protobuf";
import {
  createLogger,
  createPgliteSql,
  JournalStore,
  MemoryBus,
  migrate,
  serveConnect,
  type RunningServer,
  type Sql,
  TimerStore,
  WaitStore,
} from "@stepwise/core";
import { EventRecordSchema } from "@stepwise/proto";
import { Stepwise, Worker } from "@stepwise/sdk";
import { handleEvent } from "@stepwise/scheduler";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Executor } from "./executor.js";

/** A journal whose hand-backs take a while, as on a busy database: stop() must wait for them. */
class SlowHandBackStore extends JournalStore {
  override async requeueRun(runId: string, lease: number, requeueAfterMs: number): Promise<boolean> {
    await new Promise((r) => setTimeout(r, 300));
    return super.requeueRun(runId, lease, requeueAfterMs);
  }
}

// The executor on the embedded store and bus, with a real SDK worker over a
// real Connect stream: what happens to runs when the executor stops.
describe("Executor.stop", () => {
  let sql: Sql;
  let store: JournalStore;
  let bus: MemoryBus;
  let executor: Executor;
  let server: RunningServer;
  let worker: Worker | undefined;

  beforeEach(async () => {
    sql = await createPgliteSql();
    await migrate(sql);
    store = new SlowHandBackStore(sql);
    bus = new MemoryBus();
    executor = new Executor({
      store,
      timers: new TimerStore(sql),
      waits: new WaitStore(sql),
      bus,
      log: createLogger("test", "silent"),
      leaseMs: 60_000,
      requeueAfterMs: 60_000,
      heartbeatMs: 1_000,
      drainTimeoutMs: 200,
    });
    server = await serveConnect(executor.routes, 0, "127.0.0.1");
    executor.start();
  });

  afterEach(async () => {
    await worker?.kill();
    await server.close();
    await bus.close();
    await sql.close();
  });

  it("hands a run still executing after the drain timeout back to the queue before it resolves", async () => {
    const client = new Stepwise({ appId: "stopping", url: "http://unused" });
    let entered!: () => void;
    const inStep = new Promise<void>((r) => (entered = r));
    const fn = client.createFunction({ id: "hang", triggers: [{ event: "go" }] }, async ({ step }) => {
      await step.run("first", () => 1);
      await step.run("hang", () => (entered(), new Promise(() => {})));
    });
    worker = new Worker({ url: `http://127.0.0.1:${server.port}`, functions: [fn], handleSignals: false, maxReconnectDelayMs: 60_000 });
    await worker.connect();
    const [run] = await handleEvent(
      create(EventRecordSchema, { id: "ev-1", name: "go", dataJson: "{}", tsMs: 1n, receivedAtMs: 1n }),
      { store, waits: new WaitStore(sql), bus },
    );
    await inStep;
    expect((await store.getRun(run!.runId))?.status).toBe("RUNNING");

    await executor.stop();
    // Handed back at once: QUEUED, its work on the bus, the journaled step kept.
    const after = await store.getRun(run!.runId);
    expect(after?.status).toBe("QUEUED");
    expect(after?.steps.map((s) => s.key)).toEqual(["first:0"]);
    const work: string[] = [];
    for await (const d of bus.pullWork("stopping", 10, 50, new AbortController().signal)) {
      work.push(d.data.runId);
      d.ack();
    }
    expect(work).toEqual([run!.runId]);
  });
});
