import { create } from "@bufbuild/protobuf";
import { ConnectResponseSchema, HeartbeatSchema, type ConnectResponse } from "@stepwise/proto";
import { describe, expect, it } from "vitest";
import { Code } from "@connectrpc/connect";
import { SESSION_LIMITS, WorkerSession } from "./worker-session.js";

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

  it("ends the stream with a reason once the worker has sent more strays than its budget, which refills with time", async () => {
    const session = new WorkerSession("w", "app", new Set(["f"]), 1);
    const out = streamed(session).then(
      () => undefined,
      (e: unknown) => e,
    );
    let allowed = 0;
    while (session.stray()) allowed++;
    // The budget, and what it refilled during the loop (100 a second).
    expect(allowed).toBeGreaterThanOrEqual(SESSION_LIMITS.strays);
    expect(allowed).toBeLessThan(SESSION_LIMITS.strays + 10);
    expect(session.closed).toBe(true);
    expect(await out).toMatchObject({ code: Code.FailedPrecondition, rawMessage: `the worker sent more than ${SESSION_LIMITS.strays} results for runs it does not hold` });

    const patient = new WorkerSession("w2", "app", new Set(["f"]), 1);
    for (let i = 0; i < SESSION_LIMITS.strays; i++) patient.stray();
    await new Promise((r) => setTimeout(r, 50)); // refills 100 a second: 5 more
    for (let i = 0; i < 4; i++) expect(patient.stray()).toBe(true);
    patient.close();
  });

  it("ends the stream when results in flight exceed what the worker's capacity explains", () => {
    const session = new WorkerSession("w", "app", new Set(["f"]), 20);
    const max = 20 * SESSION_LIMITS.pendingPerSlot;
    for (let i = 0; i < max - 1; i++) session.pending.add(new Promise(() => {}));
    expect(session.roomForResult()).toBe(true);
    session.pending.add(new Promise(() => {}));
    expect(session.roomForResult()).toBe(false);
    expect(session.endedFor?.rawMessage).toBe(`the worker sent more than ${max} results at once without waiting for their acks`);
    void streamed(session).catch(() => {});
  });
});
