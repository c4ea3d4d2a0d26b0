import { create } from "@bufbuild/protobuf";
import { ConnectResponseSchema, HeartbeatSchema, type ConnectResponse } from "@stepwise/proto";
import { describe, expect, it } from "vitest";
import { WorkerSession } from "./worker-session.js";

const heartbeat = (n: number) =>
  create(ConnectResponseSchema, { message: { case: "heartbeat", value: create(HeartbeatSchema, { sentAtMs: BigInt(n) }) } });

/** What the session put on its stream, until it closed. */
async function streamed(session: WorkerSession): Promise<ConnectResponse[]> {
  const out: ConnectResponse[] = [];
  for await (const m of session.outbox) out.push(m);
  return out;
}

const turn = () => new Promise((r) => setImmediate(r));

describe("WorkerSession", () => {
  it("sends the messages of one turn as one batch to a worker that takes batches, in order", async () => {
    const session = new WorkerSession("w", "app", new Set(["f"]), 10, true);
    const out = streamed(session);
    session.send(heartbeat(1));
    session.send(heartbeat(2));
    session.send(heartbeat(3));
    await turn();
    session.send(heartbeat(4));
    await turn();
    session.send(heartbeat(5));
    session.close(); // what is queued still goes out
    const messages = await out;
    expect(messages.map((m) => m.message.case)).toEqual(["batch", "heartbeat", "heartbeat"]);
    const batch = messages[0]!.message;
    expect(batch.case === "batch" && batch.value.messages.map((m) => (m.message.case === "heartbeat" ? Number(m.message.value.sentAtMs) : 0))).toEqual([
      1, 2, 3,
    ]);
  });

  it("sends each message alone to a worker that did not ask for batches", async () => {
    const session = new WorkerSession("w", "app", new Set(["f"]), 10);
    const out = streamed(session);
    session.send(heartbeat(1));
    session.send(heartbeat(2));
    session.close();
    expect((await out).map((m) => m.message.case)).toEqual(["heartbeat", "heartbeat"]);
  });
});
