import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Stepwise, Worker } from "@stepwise/sdk";
import { Stack, eventually, gate } from "./support/stack.js";

// A matching event and the wait it resolves race: the scheduler stores the
// event then looks for waits, the executor stores the wait then looks back
// for events. Whichever commits second must see the other, every time.
describe("waitForEvent racing with its event", () => {
  const stack = new Stack();
  let client: Stepwise;
  let worker: Worker;
  /** Called (once per run key) when the handler is past "prepare" and about to wait. */
  const aboutToWait = new Map<string, () => void>();
  /** Held by the handler in "event-first" mode until the test says the event was handled. */
  const holds = new Map<string, Promise<void>>();
  const prepareRuns = new Map<string, number>();

  beforeAll(async () => {
    await stack.start();
    client = new Stepwise({ appId: "race", url: stack.ingestUrl });
    // Two ways to match, two code paths: `match` has an equality the waits
    // are indexed by; a computed comparison is evaluated against every wait
    // of the event name.
    const define = (id: string, trigger: string, match: { match: string } | { if: string }) =>
      client.createFunction({ id, triggers: [{ event: trigger }], retries: 0 }, async ({ event, step }) => {
        const key = String(event.data["key"]);
        await step.run("prepare", () => {
          prepareRuns.set(key, (prepareRuns.get(key) ?? 0) + 1);
          return key;
        });
        // Handler code between two steps: "prepare" is journaled (acked), the wait is not yet.
        const signal = aboutToWait.get(key);
        aboutToWait.delete(key);
        signal?.();
        await holds.get(key);
        const reply = await step.waitForEvent("w", { event: "reply", timeout: "30s", ...match });
        return { reply: reply?.id ?? null };
      });
    const indexed = define("await-reply", "ask", { match: "data.key" });
    const scanned = define("await-reply-scan", "ask-scan", { if: "async.data.key + '' == event.data.key" });
    worker = new Worker({ url: stack.executorUrl, functions: [indexed, scanned], capacity: 32, handleSignals: false, maxReconnectDelayMs: 300 });
    await worker.connect();
  });

  afterAll(async () => {
    await worker?.close();
    await stack.stop();
  });

  interface Sent {
    key: string;
    askId: string;
    replyId: string;
    replySentAt: number;
  }

  /**
   * Starts the run of one key and sends its reply: in "race" mode a random
   * 0-20 ms after the handler signals it is about to wait (the event races
   * the suspension); in "event-first" mode the handler is held until the
   * reply was accepted and the scheduler handled every event, so the event
   * is stored before the wait exists and only the lookback can find it.
   */
  async function drive(key: string, mode: "race" | "event-first", ask = "ask"): Promise<Sent> {
    const signalled = gate();
    aboutToWait.set(key, () => signalled.open());
    const release = gate();
    if (mode === "event-first") holds.set(key, release.promise);
    const [askId] = await client.send({ id: `ask-${key}`, name: ask, data: { key } });
    await Promise.race([
      signalled.promise,
      new Promise((_, reject) => setTimeout(() => reject(new Error(`run ${key} never reached the wait`)), 20_000)),
    ]);
    if (mode === "race") await new Promise((r) => setTimeout(r, Math.floor(Math.random() * 21)));
    const replySentAt = Date.now();
    const [replyId] = await client.send({ id: `reply-${key}`, name: "reply", data: { key } });
    if (mode === "event-first") {
      // Send returned once JetStream had the event; the scheduler stores it after.
      await eventually(async () => ((await stack.eventsSettled()) ? true : undefined), 20_000, "the scheduler to handle every event");
      expect(await stack.query("SELECT 1 FROM events WHERE id = $1", [replyId])).toHaveLength(1);
      // The wait does not exist yet: the scheduler found nothing to resolve.
      expect(await stack.query("SELECT 1 FROM waits w JOIN runs r ON r.id = w.run_id WHERE r.event_id = $1", [askId])).toEqual([]);
      release.open();
    }
    return { key, askId: askId!, replyId: replyId!, replySentAt };
  }

  async function expectAllResolved(sent: Sent[]): Promise<void> {
    const rows = await eventually(
      async () => {
        const rows = await stack.query<{ event_id: string; id: string; status: string; output: { reply: string | null } | null; ended_ms: number }>(
          `SELECT r.event_id, r.id, r.status, r.output, (extract(epoch FROM r.ended_at) * 1000)::float8 AS ended_ms
           FROM runs r WHERE r.event_id = ANY($1)`,
          [sent.map((s) => s.askId)],
        );
        return rows.length === sent.length && rows.every((r) => r.status === "COMPLETED" || r.status === "FAILED") ? rows : undefined;
      },
      // Well under the 30 s timeout: a missed event would show as a run still waiting here.
      15_000,
      `the ${sent.length} runs to resolve their waits`,
    ).catch(async (err: unknown) => {
      const stuck = await stack.query("SELECT r.event_id, r.status FROM runs r WHERE r.event_id = ANY($1) AND r.status <> 'COMPLETED'", [
        sent.map((s) => s.askId),
      ]);
      throw new Error(`${String(err)}; unresolved: ${JSON.stringify(stuck)}`);
    });
    const byAsk = new Map(rows.map((r) => [r.event_id, r]));
    for (const s of sent) {
      const r = byAsk.get(s.askId)!;
      expect({ key: s.key, status: r.status, output: r.output }).toEqual({ key: s.key, status: "COMPLETED", output: { reply: s.replyId } });
      expect(r.ended_ms - s.replySentAt).toBeLessThan(10_000);
      expect(prepareRuns.get(s.key)).toBe(1);
    }
    const runIds = rows.map((r) => r.id);
    const journal = await stack.query<{ run_id: string; step_key: string; output: { id?: string; data?: { key?: string } } | null }>(
      "SELECT run_id, step_key, output FROM steps WHERE run_id = ANY($1::uuid[]) ORDER BY run_id, seq",
      [runIds],
    );
    expect(journal).toHaveLength(2 * sent.length);
    for (const s of sent) {
      const mine = journal.filter((j) => j.run_id === byAsk.get(s.askId)!.id);
      expect(mine.map((j) => j.step_key)).toEqual(["prepare:0", "w:0"]);
      expect(mine[1]!.output).toMatchObject({ id: s.replyId, data: { key: s.key } });
    }
    // Nothing left behind: no wait, no timeout timer.
    expect(await stack.query("SELECT run_id FROM waits WHERE run_id = ANY($1::uuid[])", [runIds])).toEqual([]);
    expect(await stack.query("SELECT run_id FROM timers WHERE run_id = ANY($1::uuid[])", [runIds])).toEqual([]);
  }

  it("an event sent while the wait is being recorded is never missed (48 runs, 8 at a time, 0-20 ms after the signal)", async () => {
    const sent: Sent[] = [];
    for (let batch = 0; batch < 6; batch++) {
      sent.push(...(await Promise.all(Array.from({ length: 8 }, (_, i) => drive(`race-${batch}-${i}`, "race")))));
    }
    await expectAllResolved(sent);
  });

  it("the same race with a condition no index covers (24 runs, 8 at a time)", async () => {
    const sent: Sent[] = [];
    for (let batch = 0; batch < 3; batch++) {
      sent.push(...(await Promise.all(Array.from({ length: 8 }, (_, i) => drive(`scan-${batch}-${i}`, "race", "ask-scan")))));
    }
    await expectAllResolved(sent);
  });

  it("an event stored after the step before the wait was journaled, before the wait was recorded, resolves it (16 + 8 runs)", async () => {
    const sent: Sent[] = [];
    for (let batch = 0; batch < 4; batch++) {
      sent.push(...(await Promise.all(Array.from({ length: 4 }, (_, i) => drive(`first-${batch}-${i}`, "event-first")))));
    }
    for (let batch = 0; batch < 2; batch++) {
      sent.push(...(await Promise.all(Array.from({ length: 4 }, (_, i) => drive(`first-scan-${batch}-${i}`, "event-first", "ask-scan")))));
    }
    await expectAllResolved(sent);
  });

  it("a reply for another key resolves nothing, and the right one still does (indexed and scanned waits)", async () => {
    const asks: Array<{ key: string; ask: string; keyPath: string }> = [
      { key: "lonely", ask: "ask", keyPath: "data.key" },
      { key: "lonely-scan", ask: "ask-scan", keyPath: "" },
    ];
    for (const a of asks) {
      const signalled = gate();
      aboutToWait.set(a.key, () => signalled.open());
      await client.send({ id: `ask-${a.key}`, name: a.ask, data: { key: a.key } });
      await signalled.promise;
    }
    await client.send({ id: "reply-other", name: "reply", data: { key: "somebody-else" } });
    const waiting = await eventually(async () => {
      const rows = await stack.query<{ event_id: string; status: string; key_path: string; key_value: string }>(
        `SELECT r.event_id, r.status, w.key_path, w.key_value FROM runs r JOIN waits w ON w.run_id = r.id
         WHERE r.event_id IN ('ask-lonely', 'ask-lonely-scan') ORDER BY r.event_id`,
      );
      return rows.length === 2 && rows.every((r) => r.status === "WAITING") && (await stack.eventsSettled()) ? rows : undefined;
    }, 10_000, "the runs to wait with the other reply handled");
    // The two conditions took the two paths: by index, and by evaluating every wait of the name.
    expect(waiting.map((w) => [w.event_id, w.key_path, w.key_value])).toEqual([
      ["ask-lonely", "data.key", "lonely"],
      ["ask-lonely-scan", "", ""],
    ]);
    const replies = await client.send(asks.map((a) => ({ id: `reply-${a.key}`, name: "reply", data: { key: a.key } })));
    const runs = await eventually(async () => {
      const rows = await stack.query<{ event_id: string; status: string; output: unknown }>(
        "SELECT event_id, status, output FROM runs WHERE event_id IN ('ask-lonely', 'ask-lonely-scan') ORDER BY event_id",
      );
      return rows.every((r) => r.status === "COMPLETED") ? rows : undefined;
    }, 10_000, "the runs to complete");
    expect(runs.map((r) => [r.event_id, r.output])).toEqual([
      ["ask-lonely", { reply: replies[0] }],
      ["ask-lonely-scan", { reply: replies[1] }],
    ]);
  });
});
