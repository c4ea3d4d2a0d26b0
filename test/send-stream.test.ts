import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Stepwise, StepwiseError } from "@stepwise/sdk";
import { Stack } from "./support/stack.js";

// The SDK's sends on the real stack: they share one IngestService.SendStream.
describe("SendStream on the real stack", () => {
  const stack = new Stack();
  let client: Stepwise;

  beforeAll(async () => {
    await stack.start();
    client = new Stepwise({ appId: "sending", url: stack.ingestUrl });
  });

  afterAll(async () => {
    client?.close();
    await stack.stop();
  });

  async function storedEvents(ids: readonly string[]): Promise<string[]> {
    const { rows } = await stack.db.query<{ id: string }>("SELECT id FROM events WHERE id = ANY($1) ORDER BY id", [ids]);
    return rows.map((r) => r.id);
  }

  it("fails a bad call alone, with INVALID_ARGUMENT, while the calls around it are stored", async () => {
    const tag = stack.id;
    const calls = [
      client.send({ id: `${tag}-a`, name: "ok", data: { n: 1 } }),
      client.send([
        { id: `${tag}-b`, name: "ok", data: {} },
        { id: `${tag}-c`, name: "", data: {} },
      ]),
      client.send([
        { id: `${tag}-d`, name: "ok", data: {} },
        { id: `${tag}-e`, name: "ok", data: {} },
      ]),
    ];
    const [a, bad, de] = await Promise.allSettled(calls);
    expect(a).toEqual({ status: "fulfilled", value: [`${tag}-a`] });
    expect(de).toEqual({ status: "fulfilled", value: [`${tag}-d`, `${tag}-e`] });
    const err = (bad as PromiseRejectedResult).reason as StepwiseError;
    expect(err).toBeInstanceOf(StepwiseError);
    expect(err.code).toBe("invalid_argument");
    expect(err.message).toBe("events[1].name: must not be empty");
    await expect.poll(() => storedEvents([`${tag}-a`, `${tag}-b`, `${tag}-c`, `${tag}-d`, `${tag}-e`]), { timeout: 10_000 }).toEqual([
      `${tag}-a`,
      `${tag}-d`,
      `${tag}-e`,
    ]);
  });

  it("sends again after ingest restarted: the next call opens a new stream", async () => {
    const [before] = await client.send({ name: "ok", data: { when: "before" } });
    await stack.kill("ingest");
    await stack.startService("ingest");
    const [after] = await client.send({ name: "ok", data: { when: "after" } });
    expect(after).toMatch(/^[0-9a-f-]{36}$/);
    await expect.poll(() => storedEvents([before!, after!]), { timeout: 10_000 }).toEqual([before!, after!].sort());
  });

  it("a call in flight when ingest dies fails with the stream's error; sent again with the same ids, each event is stored once", async () => {
    const id = `${stack.id}-inflight`;
    const events = Array.from({ length: 100 }, (_, i) => ({ id: `${id}-${i}`, name: "ok", data: { i } }));
    // Stopped, ingest takes the call off the wire but never answers it; then it dies.
    process.kill(stack.procs.get("ingest")!.pid!, "SIGSTOP");
    const failure = client.send(events).then(
      () => undefined,
      (e: unknown) => e as StepwiseError,
    );
    await new Promise((r) => setTimeout(r, 300));
    await stack.kill("ingest");
    const err = await failure;
    expect(err).toBeInstanceOf(StepwiseError);
    expect(["unavailable", "unknown", "internal", "canceled", "aborted"]).toContain(err!.code);
    await stack.startService("ingest");
    expect(await storedEvents(events.map((e) => e.id))).toEqual([]);
    // The caller decides to send again: each event is stored once.
    expect(await client.send(events)).toHaveLength(100);
    expect(await client.send(events)).toHaveLength(100);
    await expect.poll(async () => (await storedEvents(events.map((e) => e.id))).length, { timeout: 20_000 }).toBe(100);
    const { rows } = await stack.db.query<{ n: number }>("SELECT count(*)::int AS n FROM events WHERE id LIKE $1", [`${id}-%`]);
    expect(rows[0]!.n).toBe(100);
  });
});
