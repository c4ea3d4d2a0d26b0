import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { pushable } from "it-pushable";
import {
  ConnectRequestSchema,
  EventTriggerSchema,
  FunctionConfigSchema,
  RegisterSchema,
  StepResultSchema,
  TriggerSchema,
  WorkerService,
  type ConnectRequest,
  type ConnectResponse,
} from "@stepwise/proto";
import { Stepwise } from "@stepwise/sdk";
import { Stack } from "./support/stack.js";

// The worker protocol as another language's SDK would speak it: a raw
// WorkerService.Connect stream, no Stepwise SDK in between.
describe("WorkerService protocol", () => {
  const stack = new Stack();
  let client: ReturnType<typeof createClient<typeof WorkerService>>;

  beforeAll(async () => {
    await stack.start();
    client = createClient(WorkerService, createGrpcTransport({ baseUrl: stack.executorUrl }));
  });

  afterAll(async () => {
    await stack.stop();
  });

  function register(appId: string, fnId: string, event: string, capacity = 1): ConnectRequest {
    return create(ConnectRequestSchema, {
      message: {
        case: "register",
        value: create(RegisterSchema, {
          appId,
          workerId: `raw-${appId}`,
          capacity,
          sdk: "raw-test",
          functions: [
            create(FunctionConfigSchema, {
              id: fnId,
              triggers: [create(TriggerSchema, { kind: { case: "event", value: create(EventTriggerSchema, { event }) } })],
            }),
          ],
        }),
      },
    });
  }

  /** Opens a stream and returns a reader of responses and the outbox. */
  function open() {
    const outbox = pushable<ConnectRequest>({ objectMode: true });
    const abort = new AbortController();
    const responses = client.connect(
      (async function* () {
        yield* outbox;
      })(),
      { signal: abort.signal },
    )[Symbol.asyncIterator]();
    const next = async (): Promise<ConnectResponse> => {
      const r = await responses.next();
      if (r.done) throw new Error("stream ended");
      return r.value;
    };
    return { outbox, next, responses, close: () => abort.abort() };
  }

  async function expectStreamError(first: ConnectRequest, code: Code, message: RegExp) {
    const s = open();
    s.outbox.push(first);
    const err = await s.next().then(
      () => undefined,
      (e: unknown) => ConnectError.from(e),
    );
    s.close();
    expect(err).toBeInstanceOf(ConnectError);
    expect(Code[err!.code]).toBe(Code[code]);
    expect(err!.rawMessage).toMatch(message);
  }

  it("refuses a stream that does not start with register", async () => {
    await expectStreamError(
      create(ConnectRequestSchema, { message: { case: "heartbeat", value: {} } }),
      Code.InvalidArgument,
      /first message on the stream must be register/,
    );
  });

  it("refuses invalid registrations with a message naming the function and field", async () => {
    await expectStreamError(register("bad app", "fn", "e"), Code.InvalidArgument, /register\.app_id/);
    await expectStreamError(register("app", "bad.fn", "e"), Code.InvalidArgument, /function "bad\.fn": id/);
    await expectStreamError(register("app", "fn", ""), Code.InvalidArgument, /function "fn": triggers\[0\]\.event/);
    await expectStreamError(register("app", "fn", "e", 0), Code.InvalidArgument, /register\.capacity/);
  });

  it("runs a run over a raw stream: start with the lease, acks carry it, stale leases are cancelled", async () => {
    const s = open();
    s.outbox.push(register("raw", "raw-fn", "raw.go"));
    const registered = await s.next();
    expect(registered.message.case).toBe("registered");

    const sdk = new Stepwise({ appId: "sender", url: stack.ingestUrl });
    const [eventId] = await sdk.send({ name: "raw.go", data: { hello: "world" } });
    const start = await s.next();
    expect(start.message.case).toBe("startRun");
    if (start.message.case !== "startRun") return;
    const run = start.message.value;
    expect(run.functionId).toBe("raw-fn");
    expect(run.event?.id).toBe(eventId);
    expect(JSON.parse(run.event!.dataJson)).toEqual({ hello: "world" });
    expect(run.journal).toEqual([]);
    expect(run.lease).toBeGreaterThan(0);

    const step = (lease: number, key: string) =>
      create(ConnectRequestSchema, {
        message: {
          case: "stepResult",
          value: create(StepResultSchema, {
            runId: run.runId,
            lease,
            stepKey: key,
            stepId: key.split(":")[0]!,
            attempt: 1,
            result: { case: "outputJson", value: '"v"' },
          }),
        },
      });
    s.outbox.push(step(run.lease, "a:0"));
    const ack = await s.next();
    expect(ack.message.case).toBe("stepAck");
    if (ack.message.case === "stepAck") {
      expect(ack.message.value).toMatchObject({ runId: run.runId, stepKey: "a:0", lease: run.lease });
      expect(ack.message.value.journaled).toBeUndefined();
    }

    // A result from another (stale) execution of the run is refused and that execution cancelled.
    s.outbox.push(step(run.lease - 1, "b:0"));
    const cancel = await s.next();
    expect(cancel.message.case).toBe("cancelRun");
    if (cancel.message.case === "cancelRun") expect(cancel.message.value.lease).toBe(run.lease - 1);
    const rows = await stack.query("SELECT step_key FROM steps WHERE run_id = $1", [run.runId]);
    expect(rows).toEqual([{ step_key: "a:0" }]);

    s.outbox.push(
      create(ConnectRequestSchema, {
        message: { case: "runResult", value: { runId: run.runId, lease: run.lease, result: { case: "outputJson", value: "42" } } },
      }),
    );
    s.outbox.end();
    // The executor records the result before it ends the stream.
    for (;;) {
      const r = await s.responses.next();
      if (r.done) break;
    }
    const final = await sdk.getRun(run.runId);
    expect(final.status).toBe("COMPLETED");
    expect(final.output).toBe(42);
    expect(final.steps.map((x) => x.key)).toEqual(["a:0"]);
  });
});
