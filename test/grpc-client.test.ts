import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { Stepwise, Worker } from "@stepwise/sdk";
import { ROOT, Stack, eventually } from "./support/stack.js";

// Another language's view: a client generated at runtime from the .proto
// files with @grpc/grpc-js, no Stepwise code involved.
describe("a plain gRPC client built from the .proto files", () => {
  const stack = new Stack();
  let worker: Worker;

  beforeAll(async () => {
    await stack.start();
    const sdk = new Stepwise({ appId: "polyglot", url: stack.ingestUrl });
    const fn = sdk.createFunction({ id: "greet", triggers: [{ event: "user.signed_up" }] }, async ({ event, step }) => {
      const greeting = await step.run("compose", () => `hello ${String(event.data["name"])}`);
      return { greeting };
    });
    worker = new Worker({ url: stack.executorUrl, functions: [fn], handleSignals: false });
    await worker.connect();
  });

  afterAll(async () => {
    await worker.close();
    await stack.stop();
  });

  it("sends an event and reads the run back", async () => {
    const def = protoLoader.loadSync(["stepwise/v1/ingest.proto", "stepwise/v1/run.proto"], {
      includeDirs: [`${ROOT}proto`],
      keepCase: false,
      longs: String,
      enums: String,
      defaults: true,
      oneofs: true,
    });
    const pkg = grpc.loadPackageDefinition(def) as unknown as {
      stepwise: { v1: { IngestService: grpc.ServiceClientConstructor; RunService: grpc.ServiceClientConstructor } };
    };
    const address = `127.0.0.1:${stack.ingestPort}`;
    const ingest = new pkg.stepwise.v1.IngestService(address, grpc.credentials.createInsecure());
    const runs = new pkg.stepwise.v1.RunService(address, grpc.credentials.createInsecure());
    const call = <T>(client: grpc.Client, method: string, req: object) =>
      new Promise<T>((resolve, reject) =>
        (client as unknown as Record<string, (r: object, cb: (e: Error | null, v: T) => void) => void>)[method]!(req, (e, v) =>
          e ? reject(e) : resolve(v),
        ),
      );

    const sent = await call<{ ids: string[] }>(ingest, "send", {
      events: [{ name: "user.signed_up", data: { fields: { name: { stringValue: "Ada" } } } }],
    });
    expect(sent.ids).toHaveLength(1);

    type GrpcRun = { id: string; status: string; steps: Array<{ id: string; output: { stringValue?: string } }>; output: { structValue?: { fields: Record<string, { stringValue: string }> } } };
    const run = await eventually(async () => {
      const list = await call<{ runs: GrpcRun[] }>(runs, "listRuns", { eventId: sent.ids[0] });
      const r = list.runs[0];
      if (!r || r.status !== "RUN_STATUS_COMPLETED") return undefined;
      return (await call<{ run: GrpcRun }>(runs, "getRun", { runId: r.id })).run;
    }, 20_000, "the run to complete");
    expect(run.status).toBe("RUN_STATUS_COMPLETED");
    expect(run.steps.map((s) => s.id)).toEqual(["compose"]);
    expect(run.steps[0]!.output.stringValue).toBe("hello Ada");
    expect(run.output.structValue!.fields["greeting"]!.stringValue).toBe("hello Ada");

    const missing = await call(runs, "getRun", { runId: "00000000-0000-4000-8000-000000000000" }).catch((e: grpc.ServiceError) => e);
    expect((missing as grpc.ServiceError).code).toBe(grpc.status.NOT_FOUND);
    ingest.close();
    runs.close();
  });

  it("serves gRPC-Web over HTTP/1.1 on the same port", async () => {
    // GetRunRequest { run_id = "00000000-0000-4000-8000-000000000000" }, in a gRPC-Web frame.
    const id = Buffer.from("00000000-0000-4000-8000-000000000000");
    const message = Buffer.concat([Buffer.from([0x0a, id.length]), id]);
    const frame = Buffer.concat([Buffer.from([0, 0, 0, 0, message.length]), message]);
    const res = await fetch(`${stack.ingestUrl}/stepwise.v1.RunService/GetRun`, {
      method: "POST",
      headers: { "content-type": "application/grpc-web+proto", "x-grpc-web": "1" },
      body: frame,
    });
    expect(res.status).toBe(200);
    const body = Buffer.from(await res.arrayBuffer());
    // A trailers-only answer carries the status in headers; otherwise in the trailer frame.
    const status = res.headers.get("grpc-status") ?? /grpc-status:\s*(\d+)/.exec(body.toString("latin1"))?.[1];
    expect(status).toBe(String(grpc.status.NOT_FOUND));
  });
});
