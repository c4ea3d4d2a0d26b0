import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Stepwise, Worker, type RunInfo } from "@stepwise/sdk";
import { type ExtraService, runOfEventIn, Stack } from "./support/stack.js";

// Rate limits, idempotency keys and singletons on the real stack: ingest,
// two schedulers and an executor as separate processes, real NATS
// JetStream and Postgres. A run they keep from starting ends SKIPPED and
// says why, in ListRuns and GetRun of its event.
describe("rate limits, idempotency and singletons", () => {
  const stack = new Stack();
  let client: Stepwise;
  let worker: Worker;
  let limitedRuns = 0;
  let burstRuns = 0;
  let secondScheduler: ExtraService;

  async function endedRun(eventId: string, timeoutMs = 20_000): Promise<RunInfo> {
    const startedAt = Date.now();
    const { runs, done } = await client.waitForRuns(eventId, { timeoutMs });
    expect(done, `waitForRuns(${eventId}) after ${Date.now() - startedAt} ms: ${JSON.stringify(runs.map((r) => [r.id, r.status]))}`).toBe(true);
    expect(runs).toHaveLength(1);
    return runs[0]!;
  }

  /** The one run an event started, once it is in `status`. */
  const runIn = (eventId: string, status: RunInfo["status"], timeoutMs?: number) => runOfEventIn(client, eventId, status, timeoutMs);

  beforeAll(async () => {
    await stack.start();
    secondScheduler = await stack.startExtra("scheduler");
    client = new Stepwise({ appId: "admit", url: stack.ingestUrl });
    const limited = client.createFunction(
      { id: "limited", triggers: [{ event: "sync.requested" }], rateLimit: { limit: 5, period: "10s" } },
      () => ++limitedRuns,
    );
    const once = client.createFunction(
      { id: "once", triggers: [{ event: "payment.received" }], idempotency: "event.data.paymentId" },
      ({ event }) => event.data["paymentId"],
    );
    const onlyOne = client.createFunction(
      { id: "only-one", triggers: [{ event: "report.requested" }], singleton: { key: "event.data.team", mode: "skip" } },
      async ({ step }) => {
        await step.sleep("long", "1h");
      },
    );
    const latest = client.createFunction(
      { id: "latest", triggers: [{ event: "index.requested" }], singleton: { key: "event.data.team", mode: "cancel" } },
      async ({ step }) => {
        await step.sleep("long", "1h");
      },
    );
    const burst = client.createFunction(
      { id: "burst", triggers: [{ event: "burst.go" }], rateLimit: { limit: 10, period: "10m" }, idempotency: "event.data.key" },
      () => ++burstRuns,
    );
    worker = new Worker({ url: stack.executorUrl, functions: [limited, once, onlyOne, latest, burst], handleSignals: false });
    await worker.connect();
  });

  afterAll(async () => {
    await worker?.close();
    client?.close();
    await stack.stop();
  });

  it("20 events in a second with a limit of 5 per 10 s: 5 runs, 15 SKIPPED with the reason", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 20; i++) ids.push(...(await client.send({ name: "sync.requested", data: { i } })));
    // Not ids.map(endedRun): the index would become the timeout.
    const runs = await Promise.all(ids.map((id) => endedRun(id)));
    expect(runs.filter((r) => r.status === "COMPLETED")).toHaveLength(5);
    const skipped = runs.filter((r) => r.status === "SKIPPED");
    expect(skipped).toHaveLength(15);
    for (const r of skipped) {
      expect(r.error).toMatchObject({ name: "RunSkipped", message: expect.stringMatching(/^rateLimit: 5 runs already started/) as unknown });
      expect(r.startedAt).toBeUndefined();
    }
    expect(limitedRuns).toBe(5);
    const one = await client.getRun(skipped[0]!.id);
    expect(one.status).toBe("SKIPPED");
  });

  it("an idempotency key: one run per value, the others SKIPPED naming the run that took it", async () => {
    // Which of events racing for a key takes it is not said: the first has ended before the others are sent.
    const first = await client.send({ name: "payment.received", data: { paymentId: "p-1" } });
    const taken = await endedRun(first[0]!);
    const again = await client.send([
      { name: "payment.received", data: { paymentId: "p-1" } },
      { name: "payment.received", data: { paymentId: "p-1" } },
    ]);
    const other = await client.send({ name: "payment.received", data: { paymentId: "p-2" } });
    expect(taken).toMatchObject({ status: "COMPLETED", output: "p-1" });
    for (const id of again) {
      const r = await endedRun(id);
      expect(r.status).toBe("SKIPPED");
      expect(r.error?.message).toBe(`idempotency: run ${taken.id} took the key in the last 24 hours`);
    }
    expect(await endedRun(other[0]!)).toMatchObject({ status: "COMPLETED", output: "p-2" });
  });

  it("a singleton in mode skip: a second run of a team SKIPPED while the first sleeps; another team runs", async () => {
    const [a] = await client.send({ name: "report.requested", data: { team: "red" } });
    const first = await runIn(a!, "WAITING");
    const [b] = await client.send({ name: "report.requested", data: { team: "red" } });
    const skipped = await endedRun(b!);
    expect(skipped.status).toBe("SKIPPED");
    expect(skipped.error?.message).toBe(`singleton: run ${first.id} of the same key has not ended`);
    const [c] = await client.send({ name: "report.requested", data: { team: "blue" } });
    await runIn(c!, "WAITING");
    expect((await client.getRun(first.id)).status).toBe("WAITING");
  });

  it("a singleton in mode cancel: the new run cancels the one of its team that has not ended", async () => {
    const [a] = await client.send({ name: "index.requested", data: { team: "red" } });
    const old = await runIn(a!, "WAITING");
    const [b] = await client.send({ name: "index.requested", data: { team: "red" } });
    const fresh = await runIn(b!, "WAITING");
    const cancelled = await endedRun(a!);
    expect(cancelled).toMatchObject({ id: old.id, status: "CANCELLED" });
    expect(cancelled.error?.message).toBe(`singleton: replaced by run ${fresh.id}`);
  });

  it("a SIGKILL of a scheduler in the middle of a burst: the rate limit and the idempotency keys still hold, no run is lost", async () => {
    const ids: string[] = [];
    // 60 events over 30 keys (each key twice): at most one run per key, at most 10 runs.
    for (let i = 0; i < 60; i++) {
      ids.push(...(await client.send({ name: "burst.go", data: { key: `k${i % 30}` } })));
      if (i === 20) await secondScheduler.kill("SIGKILL");
    }
    // Events the killed scheduler held come back after the event consumer's ack wait (30 s).
    const runs = await Promise.all(ids.map((id) => endedRun(id, 90_000)));
    const completed = runs.filter((r) => r.status === "COMPLETED");
    expect(completed).toHaveLength(10);
    expect(runs.filter((r) => r.status === "SKIPPED")).toHaveLength(50);
    expect(burstRuns).toBe(10);
    const keys = await Promise.all(completed.map(async (r) => ((await client.getRun(r.id)).event.data as { key: string }).key));
    expect(new Set(keys).size).toBe(10);
  }, 120_000);
});
