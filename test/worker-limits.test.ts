import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Stepwise, Worker } from "@stepwise/sdk";
import { ConnectRequestSchema, WorkerService, type ConnectRequest } from "@stepwise/proto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Stack } from "./support/stack.js";

// Limits as errors, not outages: a run past the step limit fails with a
// clear error; a worker that floods the executor with results for runs it
// does not hold, or does not read its stream, has its stream ended with a
// reason, and the executor goes on serving the others.
describe("worker limits", () => {
  const stack = new Stack({ STEPWISE_MAX_STEPS_PER_RUN: "5" });
  let client: Stepwise;
  let worker: Worker;
  let bodies = 0;

  beforeAll(async () => {
    await stack.start();
    client = new Stepwise({ appId: "limits", url: stack.ingestUrl });
    const long = client.createFunction({ id: "long", triggers: [{ event: "long.go" }] }, async ({ step }) => {
      for (let i = 0; i < 8; i++) await step.run(`s${i}`, () => ++bodies);
      return "never";
    });
    const short = client.createFunction({ id: "short", triggers: [{ event: "short.go" }] }, async ({ step }) => step.run("one", () => "done"));
    worker = new Worker({ url: stack.executorUrl, functions: [long, short], handleSignals: false });
    await worker.connect();
  });

  afterAll(async () => {
    await worker?.close();
    client?.close();
    await stack.stop();
  });

  async function endedRun(name: string) {
    const [id] = await client.send({ name, data: {} });
    const { runs, done } = await client.waitForRuns(id!, { timeoutMs: 20_000 });
    expect(done).toBe(true);
    return client.getRun(runs[0]!.id);
  }

  it("a run past STEPWISE_MAX_STEPS_PER_RUN fails with StepLimitExceeded; its journal keeps the steps within the limit", async () => {
    const run = await endedRun("long.go");
    expect(run.status).toBe("FAILED");
    expect(run.error).toMatchObject({ name: "StepLimitExceeded", message: expect.stringMatching(/^the run has 5 steps, the most a run may have \(STEPWISE_MAX_STEPS_PER_RUN is 5\); step "s5" was not journaled/) as unknown });
    expect(run.steps.map((s) => s.id)).toEqual(["s0", "s1", "s2", "s3", "s4"]);
    // The sixth body ran (the worker cannot know beforehand); its result was refused, and nothing after it ran.
    expect(bodies).toBe(6);
  });

  /** A raw worker stream: registers, then sends what `rest` yields. */
  function rawWorker(rest: () => AsyncGenerator<ConnectRequest>) {
    const workers = createClient(WorkerService, createGrpcTransport({ baseUrl: stack.executorUrl }));
    async function* requests(): AsyncGenerator<ConnectRequest> {
      yield create(ConnectRequestSchema, {
        message: {
          case: "register",
          value: {
            appId: "hostile",
            workerId: "hostile",
            capacity: 1,
            functions: [{ id: "idle", triggers: [{ kind: { case: "event", value: { event: "hostile.never" } } }] }],
          },
        },
      });
      yield* rest();
    }
    return workers.connect(requests());
  }

  it("a worker sending thousands of results for runs it does not hold has its stream ended with FAILED_PRECONDITION and the reason", async () => {
    const stream = rawWorker(async function* () {
      for (let i = 0; i < 5_000; i++) {
        yield create(ConnectRequestSchema, {
          message: { case: "stepResult", value: { runId: `00000000-0000-4000-8000-${String(i).padStart(12, "0")}`, lease: 1, stepKey: "x:0", stepId: "x", result: { case: "outputJson", value: "1" } } },
        });
      }
      await new Promise(() => {}); // keeps its side open: the executor must end the stream
    });
    let cancels = 0;
    const err = await (async () => {
      for await (const m of stream) if (m.message.case === "cancelRun") cancels++;
    })().then(
      () => undefined,
      (e: unknown) => ConnectError.from(e),
    );
    expect(err?.code).toBe(Code.FailedPrecondition);
    expect(err?.rawMessage).toBe("the worker sent more than 1000 results for runs it does not hold");
    // Strays within the budget are answered "drop that run" (those still queued when the stream ends are not sent).
    expect(cancels).toBeGreaterThan(0);
    expect(cancels).toBeLessThanOrEqual(1000);
    // The executor goes on serving the others.
    expect((await endedRun("short.go")).status).toBe("COMPLETED");
  });

  it("a worker that does not read its stream has it ended with RESOURCE_EXHAUSTED once 100,000 messages wait for it", async () => {
    let sent = 0;
    const stream = rawWorker(async function* () {
      for (; sent < 150_000; sent++) yield create(ConnectRequestSchema, { message: { case: "heartbeat", value: {} } });
      await new Promise(() => {});
    });
    const it = stream[Symbol.asyncIterator]();
    // Registered, then nothing read while every heartbeat asks for an answer.
    expect((await it.next()).value?.message.case).toBe("registered");
    while (sent < 150_000) await new Promise((r) => setTimeout(r, 50));
    let answered = 0;
    const err = await (async () => {
      for (let next = await it.next(); !next.done; next = await it.next()) answered++;
    })().then(
      () => undefined,
      (e: unknown) => ConnectError.from(e),
    );
    expect(err?.code).toBe(Code.ResourceExhausted);
    expect(err?.rawMessage).toBe("the worker does not read its stream: 100000 messages wait for it");
    expect(answered).toBeLessThanOrEqual(100_000);
    expect((await endedRun("short.go")).status).toBe("COMPLETED");
  }, 120_000);

  it("a worker that stops sending (no heartbeats) has its stream ended with DEADLINE_EXCEEDED and the reason", async () => {
    const startedAt = Date.now();
    const stream = rawWorker(async function* () {
      await new Promise(() => {}); // registered, then silent
    });
    const err = await (async () => {
      for await (const _ of stream) void _;
    })().then(
      () => undefined,
      (e: unknown) => ConnectError.from(e),
    );
    expect(err?.code).toBe(Code.DeadlineExceeded);
    expect(err?.rawMessage).toBe("no message from the worker for three heartbeat intervals (3000 ms)");
    // Three intervals of 1 s (the stack's STEPWISE_HEARTBEAT_MS), found at the next check.
    expect(Date.now() - startedAt).toBeLessThan(10_000);
  });

  it("a second register on a stream ends it with INVALID_ARGUMENT", async () => {
    const stream = rawWorker(async function* () {
      yield create(ConnectRequestSchema, { message: { case: "register", value: { appId: "hostile", workerId: "again", capacity: 1, functions: [] } } });
      await new Promise(() => {});
    });
    const err = await (async () => {
      for await (const _ of stream) void _;
    })().then(
      () => undefined,
      (e: unknown) => ConnectError.from(e),
    );
    expect(err?.code).toBe(Code.InvalidArgument);
    expect(err?.rawMessage).toBe("register: sent again; a stream registers once, as its first message");
  });
});
