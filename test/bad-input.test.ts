import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { create } from "@bufbuild/protobuf";
import { EventSchema, IngestService, RunService } from "@stepwise/proto";
import * as grpc from "@grpc/grpc-js";
import { Stack } from "./support/stack.js";

// Bad input gets INVALID_ARGUMENT (or NOT_FOUND), publishes nothing, stores
// nothing, and the service keeps serving.
describe("ingest rejects bad input", () => {
  const stack = new Stack();
  let ingest: ReturnType<typeof createClient<typeof IngestService>>;
  let runs: ReturnType<typeof createClient<typeof RunService>>;

  beforeAll(async () => {
    await stack.start();
    const transport = createGrpcTransport({ baseUrl: stack.ingestUrl });
    ingest = createClient(IngestService, transport);
    runs = createClient(RunService, transport);
  });

  afterAll(async () => {
    await stack.stop();
  });

  async function expectNothingStored(action: () => Promise<unknown>): Promise<void> {
    const streamBefore = await stack.eventStreamCount();
    const rowsBefore = await stack.query<{ n: string }>("SELECT count(*) AS n FROM events");
    await action();
    // A valid event afterwards proves the service still serves, and gives the
    // scheduler time to have stored anything that slipped through.
    const [okId] = (await ingest.send({ events: [create(EventSchema, { name: "after.bad", data: { ok: true } })] })).ids;
    await waitForEvent(okId!);
    expect(await stack.eventStreamCount()).toBe(streamBefore + 1);
    const rowsAfter = await stack.query<{ n: string }>("SELECT count(*) AS n FROM events");
    expect(Number(rowsAfter[0]!.n)).toBe(Number(rowsBefore[0]!.n) + 1);
  }

  async function waitForEvent(id: string): Promise<void> {
    for (let i = 0; i < 500; i++) {
      if ((await stack.query("SELECT 1 FROM events WHERE id = $1", [id])).length) return;
      await new Promise((r) => setTimeout(r, 10));
    }
    throw new Error(`event ${id} was not stored`);
  }

  async function expectCode(p: Promise<unknown>, code: Code, message: RegExp): Promise<void> {
    const err = await p.then(
      () => undefined,
      (e: unknown) => ConnectError.from(e),
    );
    expect(err, "the call should have failed").toBeInstanceOf(ConnectError);
    expect(Code[err!.code]).toBe(Code[code]);
    expect(err!.rawMessage).toMatch(message);
  }

  it("empty name", async () => {
    await expectNothingStored(() =>
      expectCode(
        ingest.send({ events: [create(EventSchema, { name: "ok" }), create(EventSchema, { name: "" })] }),
        Code.InvalidArgument,
        /events\[1\]\.name: must not be empty/,
      ),
    );
  });

  it("name over 256 characters", async () => {
    await expectNothingStored(() =>
      expectCode(ingest.send({ events: [create(EventSchema, { name: "x".repeat(257) })] }), Code.InvalidArgument, /events\[0\]\.name/),
    );
  });

  it("data that is not an object (Connect JSON)", async () => {
    await expectNothingStored(async () => {
      for (const data of ["[1,2]", '"text"', "42", "true"]) {
        const res = await fetch(`${stack.ingestUrl}/stepwise.v1.IngestService/Send`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: `{"events":[{"name":"bad.data","data":${data}}]}`,
        });
        expect(res.status).toBe(400);
        const body = (await res.json()) as { code: string };
        expect(body.code).toBe("invalid_argument");
      }
    });
  });

  it("an event over 512 KiB", async () => {
    await expectNothingStored(() =>
      expectCode(
        ingest.send({ events: [create(EventSchema, { name: "big", data: { blob: "x".repeat(600 * 1024) } })] }),
        Code.InvalidArgument,
        /events\[0\]\.data: \d+ bytes encoded, at most 524288/,
      ),
    );
  });

  it("more than 5,000 events in one call", async () => {
    const events = Array.from({ length: 5_001 }, (_, i) => create(EventSchema, { name: "many", data: { i } }));
    await expectNothingStored(() => expectCode(ingest.send({ events }), Code.InvalidArgument, /5001 events in one call, at most 5000/));
  });

  it("no events", async () => {
    await expectNothingStored(() => expectCode(ingest.send({ events: [] }), Code.InvalidArgument, /at least one event/));
  });

  it("malformed protobuf", async () => {
    await expectNothingStored(async () => {
      const res = await fetch(`${stack.ingestUrl}/stepwise.v1.IngestService/Send`, {
        method: "POST",
        headers: { "content-type": "application/proto" },
        body: new Uint8Array([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01]),
      });
      expect(res.status).toBe(400);
      const body = (await res.json()) as { code: string };
      expect(body.code).toBe("invalid_argument");
    });
  });

  it("malformed protobuf over gRPC", async () => {
    await expectNothingStored(async () => {
      const client = new grpc.Client(`127.0.0.1:${stack.ingestPort}`, grpc.credentials.createInsecure());
      const err = await new Promise<grpc.ServiceError | null>((resolve) =>
        client.makeUnaryRequest(
          "/stepwise.v1.IngestService/Send",
          () => Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01]),
          (b: Buffer) => b,
          {},
          (e) => resolve(e),
        ),
      );
      client.close();
      expect(err?.code).toBe(grpc.status.INVALID_ARGUMENT);
    });
  });

  it("GetRun of an unknown id is NOT_FOUND", async () => {
    await expectCode(runs.getRun({ runId: "00000000-0000-4000-8000-000000000000" }), Code.NotFound, /not found/);
    await expectCode(runs.getRun({ runId: "not-a-uuid" }), Code.NotFound, /not found/);
  });

  // What a first fuzz pass found, each answered as the client's fault.
  describe("what the fuzz found", () => {
    const post = (path: string, body: string | Uint8Array, headers: Record<string, string>) =>
      fetch(`${stack.ingestUrl}${path}`, { method: "POST", headers, body });

    it("a NUL in a RunService string is INVALID_ARGUMENT naming the field, before any query", async () => {
      await expectCode(runs.listRuns({ functionId: "a\u0000" }), Code.InvalidArgument, /^function_id: must not contain NUL/);
      await expectCode(runs.listRuns({ eventId: "a\u0000" }), Code.InvalidArgument, /^event_id: must not contain NUL/);
      await expectCode(runs.waitForRuns({ eventId: "a\u0000", timeoutMs: 100 }), Code.InvalidArgument, /^event_id: must not contain NUL/);
    });

    it("a run id of a million characters gets a short NOT_FOUND that does not echo it", async () => {
      const res = await post("/stepwise.v1.RunService/GetRun", JSON.stringify({ runId: "r".repeat(1_000_000) }), { "content-type": "application/json" });
      const text = await res.text();
      expect(res.status).toBe(404);
      expect(text.length).toBeLessThan(300);
      expect(JSON.parse(text)).toMatchObject({ code: "not_found", message: `run "${"r".repeat(64)}"… (1000000 characters) not found` });
    });

    it("a SendStream call whose trace_parent is not a traceparent has its events stored, without it", async () => {
      // Found by the fuzz: the text was handed on to the journal, which refused its NUL, so the
      // accepted event was retried by the scheduler and never stored.
      async function* calls() {
        yield { calls: [{ callId: 1n, traceParent: "a\u0000b", events: [create(EventSchema, { name: "traced.badly", data: {} })] }] };
      }
      const answers = [];
      for await (const res of ingest.sendStream(calls())) answers.push(...res.answers);
      expect(answers).toHaveLength(1);
      const outcome = answers[0]!.outcome;
      expect(outcome.case).toBe("sent");
      const id = outcome.case === "sent" ? outcome.value.ids[0]! : "";
      await waitForEvent(id);
    });

    it("gzip or br over bytes that are not compressed is INVALID_ARGUMENT, and stores nothing", async () => {
      for (const encoding of ["gzip", "br"]) {
        await expectNothingStored(async () => {
          const res = await post("/stepwise.v1.IngestService/Send", new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]), { "content-type": "application/json", "content-encoding": encoding });
          expect(res.status).toBe(400);
          expect(((await res.json()) as { code: string }).code).toBe("invalid_argument");
        });
      }
    });

    it("a gRPC-Web body that does not parse, or a compressed envelope with no encoding, is INVALID_ARGUMENT", async () => {
      const frame = (flags: number, bytes: number[]) => new Uint8Array([flags, 0, 0, 0, bytes.length, ...bytes]);
      for (const body of [frame(0, [0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01]), frame(1, [0x0a, 0x00])]) {
        const res = await post("/stepwise.v1.RunService/GetRun", body, { "content-type": "application/grpc-web+proto" });
        const bytes = Buffer.from(await res.arrayBuffer());
        const status = res.headers.get("grpc-status") ?? /grpc-status: ?(\d+)/.exec(bytes.toString("latin1"))?.[1];
        expect(status).toBe(String(Code.InvalidArgument));
      }
    });
  });
});
