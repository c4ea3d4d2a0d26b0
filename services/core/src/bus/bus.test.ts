import { randomBytes } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { EventRecordSchema, RunWorkSchema, type EventRecord, type RunWork } from "@stepwise/proto";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import type { Bus, Delivery, Subscription } from "./bus.js";
import { JetStreamBus } from "./jetstream-bus.js";
import { MemoryBus } from "./memory-bus.js";

// One conformance suite for both buses: `stepwise dev` runs on the in-process
// one and deployments on JetStream, and the services must not notice.

const NATS_URL = process.env["TEST_NATS_URL"] ?? "nats://127.0.0.1:4222";

interface OpenBus {
  bus: Bus;
  /** Cleans up; `closed` says the test closed the bus itself. */
  dispose(closed: boolean): Promise<void>;
}

interface BusKind {
  name: string;
  open(): Promise<OpenBus>;
  /** The shortest pull expiry the bus honours, used where a pull must run out. */
  expiresMs: number;
}

const suitePrefix = `bt-${randomBytes(4).toString("hex")}`;
let busCount = 0;

const kinds: BusKind[] = [
  {
    name: "MemoryBus",
    expiresMs: 300,
    async open() {
      const bus = new MemoryBus();
      return { bus, dispose: () => bus.close() };
    },
  },
  {
    name: "JetStreamBus",
    // JetStream refuses pull expiries under a second.
    expiresMs: 1000,
    async open() {
      // A stream pair per test: the event consumer is durable and shared, so
      // tests on one prefix would meet each other's events.
      const prefix = `${suitePrefix}-${++busCount}`;
      const options = { url: NATS_URL, prefix, name: "bus-test" };
      const bus = await JetStreamBus.connect(options);
      return {
        bus,
        async dispose(closed) {
          const owner = closed ? await JetStreamBus.connect(options) : bus;
          await owner.destroy();
          await owner.close();
        },
      };
    },
  },
];

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

async function waitFor(what: string, cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

function eventRecord(id: string, dataJson = `{"id":"${id}"}`): EventRecord {
  return create(EventRecordSchema, {
    id,
    name: "order.placed",
    dataJson,
    tsMs: 1_700_000_000_123n,
    receivedAtMs: 1_700_000_000_456n,
  });
}

function runWork(appId: string, functionId: string, runId: string): RunWork {
  return create(RunWorkSchema, { appId, functionId, runId });
}

/** Drains one pull, leaving settlement to the caller. */
async function pullFrom(
  bus: Bus,
  appId: string,
  max: number,
  expiresMs: number,
  signal: AbortSignal = new AbortController().signal,
): Promise<{ deliveries: Delivery<RunWork>[]; elapsedMs: number }> {
  const started = Date.now();
  const deliveries: Delivery<RunWork>[] = [];
  for await (const d of bus.pullWork(appId, max, expiresMs, signal)) deliveries.push(d);
  return { deliveries, elapsedMs: Date.now() - started };
}

function runIds(deliveries: readonly Delivery<RunWork>[]): string[] {
  return deliveries.map((d) => d.data.runId).sort();
}

function count<T>(items: readonly T[]): Map<T, number> {
  const m = new Map<T, number>();
  for (const i of items) m.set(i, (m.get(i) ?? 0) + 1);
  return m;
}

/** Resolves once cond() holds; fails after 5 s. */
async function waitUntil(cond: () => boolean): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error("condition not met within 5 s");
    await sleep(5);
  }
}

function busSuite(kind: BusKind): void {
  describe(`Bus conformance: ${kind.name}`, () => {
    const open: OpenBus[] = [];
    const subscriptions: Subscription[] = [];
    let closedByTest = false;

    const pull = (bus: Bus, appId: string, max: number, expiresMs = kind.expiresMs, signal?: AbortSignal) =>
      pullFrom(bus, appId, max, expiresMs, signal);

    async function newBus(): Promise<Bus> {
      const o = await kind.open();
      open.push(o);
      return o.bus;
    }

    async function consume(
      bus: Bus,
      handler: (record: EventRecord, delivery: Delivery<EventRecord>) => Promise<void>,
      concurrency = 4,
    ): Promise<Subscription> {
      const sub = await bus.consumeEvents(handler, { concurrency });
      subscriptions.push(sub);
      return sub;
    }

    afterEach(async () => {
      for (const s of subscriptions.splice(0)) await s.stop();
      for (const o of open.splice(0)) await o.dispose(closedByTest);
      closedByTest = false;
    });

    afterAll(async () => {
      for (const o of open.splice(0)) await o.dispose(false);
    });

    it("publishEvents then consumeEvents delivers each event once, with deliveryCount 1", async () => {
      const bus = await newBus();
      const before = ["e-1", "e-2", "e-3", "e-4", "e-5"].map((id) => eventRecord(id));
      await bus.publishEvents(before);
      const seen: Array<{ record: EventRecord; deliveryCount: number }> = [];
      await consume(bus, async (record, d) => {
        seen.push({ record, deliveryCount: d.deliveryCount });
      });
      await waitFor("5 events", () => seen.length >= 5);

      // Events published while the consumer runs arrive too.
      await bus.publishEvents([eventRecord("e-6"), eventRecord("e-7")]);
      await waitFor("7 events", () => seen.length >= 7);
      await sleep(300);

      expect(seen.map((s) => s.record.id).sort()).toEqual(["e-1", "e-2", "e-3", "e-4", "e-5", "e-6", "e-7"]);
      expect(seen.every((s) => s.deliveryCount === 1)).toBe(true);
      const first = seen.find((s) => s.record.id === "e-1")!.record;
      expect(first).toMatchObject({
        id: "e-1",
        name: "order.placed",
        dataJson: '{"id":"e-1"}',
        tsMs: 1_700_000_000_123n,
        receivedAtMs: 1_700_000_000_456n,
      });
    });

    it("an event id published twice, in one call or in two, is delivered once", async () => {
      const bus = await newBus();
      await bus.publishEvents([eventRecord("same-call", '{"copy":1}'), eventRecord("same-call", '{"copy":2}')]);
      await bus.publishEvents([eventRecord("two-calls", '{"copy":1}')]);
      await bus.publishEvents([eventRecord("two-calls", '{"copy":2}'), eventRecord("same-call", '{"copy":3}')]);
      const seen: EventRecord[] = [];
      await consume(bus, async (record) => {
        seen.push(record);
      });
      await waitFor("both events", () => seen.length >= 2);

      // A later duplicate, while the consumer runs, is dropped as well.
      await bus.publishEvents([eventRecord("two-calls", '{"copy":4}'), eventRecord("last")]);
      await waitFor("the last event", () => seen.some((r) => r.id === "last"));
      await sleep(300);

      expect(count(seen.map((r) => r.id))).toEqual(
        new Map([
          ["same-call", 1],
          ["two-calls", 1],
          ["last", 1],
        ]),
      );
      // The first copy is the one kept.
      expect(seen.filter((r) => r.id !== "last").map((r) => r.dataJson)).toEqual(['{"copy":1}', '{"copy":1}']);
    });

    it("a handler that throws gets its event again after a backoff, and success acks it", async () => {
      const bus = await newBus();
      const deliveries: Array<{ id: string; deliveryCount: number; at: number }> = [];
      await consume(bus, async (record, d) => {
        deliveries.push({ id: record.id, deliveryCount: d.deliveryCount, at: Date.now() });
        if (d.deliveryCount === 1) throw new Error("database down");
      });
      await bus.publishEvents([eventRecord("flaky")]);
      await waitFor("a redelivery", () => deliveries.length >= 2);
      // Past the next backoff step (500 ms): a third delivery would have come by now.
      await sleep(700);

      expect(deliveries.map((d) => [d.id, d.deliveryCount])).toEqual([
        ["flaky", 1],
        ["flaky", 2],
      ]);
      const gap = deliveries[1]!.at - deliveries[0]!.at;
      expect(gap).toBeGreaterThanOrEqual(200);
      expect(gap).toBeLessThan(2000);
    });

    it("consumeEvents never runs more handlers at once than its concurrency", async () => {
      for (const concurrency of [1, 3]) {
        const bus = await newBus();
        await bus.publishEvents(Array.from({ length: 12 }, (_, i) => eventRecord(`c${concurrency}-${i}`)));
        let active = 0;
        let peak = 0;
        const done: string[] = [];
        await consume(
          bus,
          async (record) => {
            active++;
            peak = Math.max(peak, active);
            await sleep(30);
            active--;
            done.push(record.id);
          },
          concurrency,
        );
        await waitFor("12 handled events", () => done.length >= 12);
        expect({ concurrency, peak }).toEqual({ concurrency, peak: concurrency });
        expect(new Set(done).size).toBe(12);
      }
    });

    it("stop() ends delivery and waits for the handlers in progress", async () => {
      const bus = await newBus();
      const started: string[] = [];
      const finished: string[] = [];
      const sub = await consume(bus, async (record) => {
        started.push(record.id);
        await sleep(200);
        finished.push(record.id);
      });
      await bus.publishEvents([eventRecord("before-stop")]);
      await waitFor("the first event", () => started.length === 1);
      await sub.stop();
      expect(finished).toEqual(["before-stop"]);

      await bus.publishEvents([eventRecord("after-stop")]);
      await sleep(400);
      expect(started).toEqual(["before-stop"]);

      // Not lost: the next consumer gets it, as a first delivery.
      const next: Array<[string, number]> = [];
      await consume(bus, async (record, d) => {
        next.push([record.id, d.deliveryCount]);
      });
      await waitFor("the event published after stop", () => next.length >= 1);
      await sleep(100);
      expect(next).toEqual([["after-stop", 1]]);
    });

    it("pullWork yields at most max messages", async () => {
      const bus = await newBus();
      await bus.publishWork(Array.from({ length: 5 }, (_, i) => runWork("shop", i % 2 ? "ship" : "pay", `run-${i}`)));

      const first = await pull(bus, "shop", 3, 5000);
      expect(first.deliveries).toHaveLength(3);
      // Ending on max, not on expiry.
      expect(first.elapsedMs).toBeLessThan(2000);
      for (const d of first.deliveries) {
        expect(d.deliveryCount).toBe(1);
        expect(d.data.appId).toBe("shop");
        d.ack();
      }

      const rest = await pull(bus, "shop", 10);
      expect(rest.deliveries).toHaveLength(2);
      for (const d of rest.deliveries) d.ack();
      expect([...runIds(first.deliveries), ...runIds(rest.deliveries)].sort()).toEqual(
        ["run-0", "run-1", "run-2", "run-3", "run-4"].sort(),
      );
      const pay = rest.deliveries.concat(first.deliveries).find((d) => d.data.runId === "run-0");
      expect(pay?.data.functionId).toBe("pay");
    });

    it("pullWork ends at expiry when fewer messages are available", async () => {
      const bus = await newBus();
      await bus.publishWork([runWork("shop", "pay", "only-one")]);
      const [some, none] = await Promise.all([pull(bus, "shop", 5), pull(bus, "idle", 5)]);
      expect(runIds(some.deliveries)).toEqual(["only-one"]);
      some.deliveries[0]!.ack();
      expect(none.deliveries).toEqual([]);
      for (const { elapsedMs } of [some, none]) {
        // Neither ends early (an executor would spin) nor lingers past its expiry.
        expect(elapsedMs).toBeGreaterThanOrEqual(kind.expiresMs * 0.8);
        expect(elapsedMs).toBeLessThan(kind.expiresMs + 1000);
      }
    });

    it("pullWork of one app never receives another app's work", async () => {
      const bus = await newBus();
      await bus.publishWork([
        runWork("shop", "pay", "shop-1"),
        runWork("billing", "invoice", "billing-1"),
        runWork("shop-admin", "pay", "shop-admin-1"),
        runWork("shop", "ship", "shop-2"),
      ]);
      // Every pull asks for more than its app has, so each runs to expiry.
      const [billing, shop, admin, nobody] = await Promise.all([
        pull(bus, "billing", 10),
        pull(bus, "shop", 10),
        pull(bus, "shop-admin", 10),
        pull(bus, "nobody", 10),
      ]);
      expect(runIds(billing.deliveries)).toEqual(["billing-1"]);
      expect(runIds(shop.deliveries)).toEqual(["shop-1", "shop-2"]);
      expect(runIds(admin.deliveries)).toEqual(["shop-admin-1"]);
      expect(nobody.deliveries).toEqual([]);
      for (const d of [...billing.deliveries, ...shop.deliveries, ...admin.deliveries]) {
        expect(d.deliveryCount).toBe(1);
        d.ack();
      }
    });

    it("a message nak'd by one pull is delivered to a later pull, and an acked one never again", async () => {
      const bus = await newBus();
      await bus.publishWork([runWork("shop", "pay", "run-nak")]);
      const first = await pull(bus, "shop", 1);
      expect(first.deliveries.map((d) => [d.data.runId, d.deliveryCount])).toEqual([["run-nak", 1]]);
      first.deliveries[0]!.nak();

      const second = await pull(bus, "shop", 1);
      expect(second.deliveries.map((d) => [d.data.runId, d.deliveryCount])).toEqual([["run-nak", 2]]);
      second.deliveries[0]!.ack();

      const third = await pull(bus, "shop", 1);
      expect(third.deliveries).toEqual([]);
    });

    it("nak with a delay holds the message back for that long", async () => {
      const bus = await newBus();
      await bus.publishWork([runWork("shop", "pay", "run-later")]);
      const first = await pull(bus, "shop", 1);
      const nakAt = Date.now();
      first.deliveries[0]!.nak(400);
      const second = await pull(bus, "shop", 1, 3000);
      expect(second.deliveries.map((d) => [d.data.runId, d.deliveryCount])).toEqual([["run-later", 2]]);
      expect(Date.now() - nakAt).toBeGreaterThanOrEqual(350);
      second.deliveries[0]!.ack();
    });

    it("an acked message is not delivered again, and later work still is", async () => {
      const bus = await newBus();
      await bus.publishWork([runWork("shop", "pay", "a"), runWork("shop", "pay", "b")]);
      const first = await pull(bus, "shop", 2);
      expect(runIds(first.deliveries)).toEqual(["a", "b"]);
      for (const d of first.deliveries) d.ack();
      await bus.publishWork([runWork("shop", "pay", "c")]);
      const next = await pull(bus, "shop", 5);
      expect(runIds(next.deliveries)).toEqual(["c"]);
      next.deliveries[0]!.ack();
    });

    it("aborting the signal ends a pending pull promptly", async () => {
      const bus = await newBus();
      const controller = new AbortController();
      const pending = pull(bus, "shop", 5, 10_000, controller.signal);
      await sleep(200);
      const abortedAt = Date.now();
      controller.abort();
      const result = await pending;
      expect(result.deliveries).toEqual([]);
      expect(Date.now() - abortedAt).toBeLessThan(500);
    });

    it("a pull whose signal is already aborted yields nothing and takes nothing", async () => {
      const bus = await newBus();
      await bus.publishWork([runWork("shop", "pay", "untouched")]);
      const result = await pull(bus, "shop", 5, 10_000, AbortSignal.abort());
      expect(result.deliveries).toEqual([]);
      expect(result.elapsedMs).toBeLessThan(500);

      const next = await pull(bus, "shop", 1);
      expect(next.deliveries.map((d) => [d.data.runId, d.deliveryCount])).toEqual([["untouched", 1]]);
      next.deliveries[0]!.ack();
    });

    it("work published after an aborted pull goes to the next pull", async () => {
      const bus = await newBus();
      const controller = new AbortController();
      const pending = pull(bus, "shop", 5, 10_000, controller.signal);
      await sleep(200);
      controller.abort();
      expect((await pending).deliveries).toEqual([]);

      await bus.publishWork([runWork("shop", "pay", "after-abort")]);
      const next = await pull(bus, "shop", 1);
      expect(next.deliveries.map((d) => d.data.runId)).toEqual(["after-abort"]);
      next.deliveries[0]!.ack();
    });

    it("announced run ends reach every watcher, in one message per announcement, until it stops", async () => {
      const bus = await newBus();
      const a: string[][] = [];
      const b: string[][] = [];
      const subA = await bus.watchRunsEnded((runs) => a.push(runs.map((r) => `${r.runId}/${r.eventId}`)));
      const subB = await bus.watchRunsEnded((runs) => b.push(runs.map((r) => `${r.runId}/${r.eventId}`)));
      bus.announceRunsEnded([
        { runId: "r1", eventId: "e1" },
        { runId: "r2", eventId: "e1" },
      ]);
      bus.announceRunsEnded([]);
      await waitUntil(() => a.length === 1 && b.length === 1);
      expect(a).toEqual([["r1/e1", "r2/e1"]]);
      expect(b).toEqual(a);
      await subA.stop();
      bus.announceRunsEnded([{ runId: "r3", eventId: "e2" }]);
      await waitUntil(() => b.length === 2);
      await sleep(100);
      expect(a).toHaveLength(1);
      expect(b[1]).toEqual(["r3/e2"]);
      await subB.stop();
    });

    it("announced cancellations reach every watcher with their executor, lease and reason, until it stops", async () => {
      const bus = await newBus();
      const a: unknown[][] = [];
      const b: unknown[][] = [];
      const subA = await bus.watchRunsCancelled((runs) => a.push(runs));
      const subB = await bus.watchRunsCancelled((runs) => b.push(runs));
      bus.announceRunsCancelled([
        { runId: "r1", executorId: "x1", lease: 3, reason: "wrong order" },
        { runId: "r2", executorId: "x2", lease: 1, reason: "" },
      ]);
      bus.announceRunsCancelled([]);
      await waitUntil(() => a.length === 1 && b.length === 1);
      expect(a).toEqual([
        [
          { runId: "r1", executorId: "x1", lease: 3, reason: "wrong order" },
          { runId: "r2", executorId: "x2", lease: 1, reason: "" },
        ],
      ]);
      expect(b).toEqual(a);
      await subA.stop();
      bus.announceRunsCancelled([{ runId: "r3", executorId: "x1", lease: 2, reason: "x" }]);
      await waitUntil(() => b.length === 2);
      await sleep(100);
      expect(a).toHaveLength(1);
      await subB.stop();
    });

    it("close() ends a pending pull", async () => {
      const bus = await newBus();
      const pending = pull(bus, "shop", 5, 10_000);
      await sleep(200);
      const closedAt = Date.now();
      closedByTest = true;
      await bus.close();
      const result = await pending.catch(() => ({ deliveries: [] }));
      expect(result.deliveries).toEqual([]);
      expect(Date.now() - closedAt).toBeLessThan(1000);
    });
  });
}

for (const kind of kinds) busSuite(kind);

// Only JetStream can hold bytes that are not a message of ours (anything can
// publish on its subjects); the in-process bus holds decoded values.
describe("JetStreamBus with messages that do not decode", () => {
  it("drops them and keeps consuming events and pulling work", async () => {
    const prefix = `bt-poison-${randomBytes(4).toString("hex")}`;
    const bus = await JetStreamBus.connect({ url: "nats://127.0.0.1:4222", prefix });
    const { connect } = await import("@nats-io/transport-node");
    const { jetstream } = await import("@nats-io/jetstream");
    const nc = await connect({ servers: "nats://127.0.0.1:4222" });
    try {
      const js = jetstream(nc);
      const garbage = new Uint8Array([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]);
      await js.publish(`${prefix}.events`, garbage);
      await bus.publishEvents([create(EventRecordSchema, { id: "good-1", name: "n", dataJson: "{}" })]);
      const got: string[] = [];
      const sub = await bus.consumeEvents(async (r) => void got.push(r.id), { concurrency: 2 });
      for (let i = 0; i < 200 && got.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
      await sub.stop();
      expect(got).toEqual(["good-1"]);

      await js.publish(`${prefix}.work.app.fn`, garbage);
      await bus.publishWork([create(RunWorkSchema, { runId: "r-1", appId: "app", functionId: "fn" })]);
      const pulled: string[] = [];
      for await (const d of bus.pullWork("app", 2, 1000, new AbortController().signal)) {
        pulled.push(d.data.runId);
        d.ack();
      }
      expect(pulled).toEqual(["r-1"]);
    } finally {
      await nc.close();
      await bus.destroy();
      await bus.close();
    }
  });
});

describe("JetStreamBus work consumers", () => {
  it("keeps the consumer it looked up for later pulls, and creates it again once it was deleted behind its back", async () => {
    const prefix = `bt-gone-${randomBytes(4).toString("hex")}`;
    const bus = await JetStreamBus.connect({ url: "nats://127.0.0.1:4222", prefix });
    const { connect } = await import("@nats-io/transport-node");
    const { jetstreamManager } = await import("@nats-io/jetstream");
    const nc = await connect({ servers: "nats://127.0.0.1:4222" });
    const pullAll = async () => {
      const ids: string[] = [];
      try {
        for await (const d of bus.pullWork("app", 5, 1000, new AbortController().signal)) {
          ids.push(d.data.runId);
          d.ack();
        }
      } catch {
        // The pull that meets the deleted consumer fails; the next one recovers.
      }
      return ids;
    };
    try {
      const jsm = await jetstreamManager(nc);
      const stream = `${prefix.toUpperCase().replace(/[^A-Z0-9_-]/g, "_")}_WORK`;
      await bus.publishWork([create(RunWorkSchema, { runId: "r-1", appId: "app", functionId: "fn" })]);
      expect(await pullAll()).toEqual(["r-1"]);
      const [durable] = (await jsm.consumers.list(stream).next()).map((c) => c.name);
      expect(durable).toBeDefined();
      await jsm.consumers.delete(stream, durable!);

      await bus.publishWork([create(RunWorkSchema, { runId: "r-2", appId: "app", functionId: "fn" })]);
      const pulled: string[] = [];
      for (let i = 0; i < 4 && pulled.length === 0; i++) pulled.push(...(await pullAll()));
      expect(pulled).toEqual(["r-2"]);
    } finally {
      await nc.close();
      await bus.destroy();
      await bus.close();
    }
  });
});

describe("JetStreamBus ack wait", () => {
  const url = "nats://127.0.0.1:4222";

  it("gives the consumers the configured ack wait and replicas, and brings existing ones to it on connect", async () => {
    const prefix = `bt-ackwait-${randomBytes(4).toString("hex")}`;
    const upper = prefix.toUpperCase().replace(/[^A-Z0-9_-]/g, "_");
    const { connect } = await import("@nats-io/transport-node");
    const { jetstreamManager } = await import("@nats-io/jetstream");
    const nc = await connect({ servers: url });
    const jsm = await jetstreamManager(nc);
    const first = await JetStreamBus.connect({ url, prefix, ackWaitMs: 30_000 });
    try {
      const sub = await first.consumeEvents(async () => {}, { concurrency: 1 });
      await sub.stop();
      for await (const _ of first.pullWork("app", 1, 1000, new AbortController().signal)) void _;
      const durables = async () => [
        ...(await jsm.consumers.list(`${upper}_EVENTS`).next()),
        ...(await jsm.consumers.list(`${upper}_WORK`).next()),
      ];
      const before = await durables();
      expect(before).toHaveLength(2);
      for (const c of before) {
        expect(c.config.ack_wait).toBe(30_000 * 1e6);
        expect(c.config.num_replicas).toBe(1);
      }
      expect((await jsm.streams.info(`${upper}_EVENTS`)).config.num_replicas).toBe(1);
      await first.close();

      const second = await JetStreamBus.connect({ url, prefix, ackWaitMs: 2_000 });
      const sub2 = await second.consumeEvents(async () => {}, { concurrency: 1 });
      await sub2.stop();
      for await (const _ of second.pullWork("app", 1, 1000, new AbortController().signal)) void _;
      for (const c of await durables()) expect(c.config.ack_wait).toBe(2_000 * 1e6);
      await second.destroy();
      await second.close();
    } finally {
      await nc.close();
    }
  });

  it("keeps an event whose handling outlasts the ack wait, and hands an unacked one to another consumer after it", async () => {
    const prefix = `bt-keep-${randomBytes(4).toString("hex")}`;
    const a = await JetStreamBus.connect({ url, prefix, ackWaitMs: 1_000 });
    const b = await JetStreamBus.connect({ url, prefix, ackWaitMs: 1_000 });
    try {
      await a.publishEvents([create(EventRecordSchema, { id: "slow", name: "n", dataJson: "{}" })]);
      const seen: Array<{ id: string; count: number }> = [];
      // A handler three ack waits long: working() keeps it from redelivery.
      const subA = await a.consumeEvents(async (r, d) => {
        seen.push({ id: r.id, count: d.deliveryCount });
        await new Promise((res) => setTimeout(res, 3_000));
      }, { concurrency: 1 });
      await new Promise((res) => setTimeout(res, 3_500));
      expect(seen).toEqual([{ id: "slow", count: 1 }]);
      await subA.stop();

      // A handler that never settles, as in a frozen process: the event goes to the other consumer after the ack wait.
      await a.publishEvents([create(EventRecordSchema, { id: "stuck", name: "n", dataJson: "{}" })]);
      const frozen = { taken: 0 };
      await a.consumeEvents(async (r) => {
        if (r.id === "stuck") frozen.taken = Date.now();
        await new Promise(() => {});
      }, { concurrency: 1 });
      for (let i = 0; i < 300 && frozen.taken === 0; i++) await new Promise((res) => setTimeout(res, 10));
      expect(frozen.taken).toBeGreaterThan(0);
      // Freeze it: no more working() from a, as a SIGSTOPped process sends none.
      (a as unknown as { nc: { close(): Promise<void> } }).nc.close().catch(() => {});
      let movedAt = 0;
      const subB = await b.consumeEvents(async (r) => {
        if (r.id === "stuck") movedAt = Date.now();
      }, { concurrency: 1 });
      for (let i = 0; i < 400 && movedAt === 0; i++) await new Promise((res) => setTimeout(res, 10));
      expect(movedAt).toBeGreaterThan(0);
      expect(movedAt - frozen.taken).toBeLessThan(1_000 + 1_500);
      await subB.stop();
    } finally {
      await b.destroy();
      await b.close();
      await a.close().catch(() => {});
    }
  });
});

// A NATS server that lost its store (one replica) comes back without the
// streams and consumers: deleting them behind the bus's back is the same.
describe("JetStreamBus when NATS lost its streams", () => {
  it("makes them again on the next publish or pull, resumes consuming, and says the work stream was made anew", async () => {
    const url = "nats://127.0.0.1:4222";
    const prefix = `bt-lost-${randomBytes(4).toString("hex")}`;
    const upper = prefix.toUpperCase().replace(/[^A-Z0-9_-]/g, "_");
    let workStreamsMade = 0;
    const bus = await JetStreamBus.connect({ url, prefix, ackWaitMs: 2_000, onWorkStreamCreated: async () => void workStreamsMade++ });
    const { connect } = await import("@nats-io/transport-node");
    const { jetstreamManager } = await import("@nats-io/jetstream");
    const nc = await connect({ servers: url });
    const jsm = await jetstreamManager(nc);
    const got: string[] = [];
    const sub = await bus.consumeEvents(async (r) => void got.push(r.id), { concurrency: 2 });
    try {
      expect(workStreamsMade).toBe(1);
      await bus.publishEvents([create(EventRecordSchema, { id: "before", name: "n", dataJson: "{}" })]);
      for (let i = 0; i < 200 && got.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
      expect(got).toEqual(["before"]);

      // The work stream first: the event consumer, failing when its stream goes, makes the
      // streams again at once, and would find the work stream not yet deleted.
      await jsm.streams.delete(`${upper}_WORK`);
      await jsm.streams.delete(`${upper}_EVENTS`);
      const lostAt = Date.now();
      // Sends fail until the streams are back, then succeed: as a client retrying.
      for (;;) {
        try {
          await bus.publishEvents([create(EventRecordSchema, { id: "after", name: "n", dataJson: "{}" })]);
          break;
        } catch {
          if (Date.now() - lostAt > 10_000) throw new Error("the event stream did not come back");
          await new Promise((r) => setTimeout(r, 100));
        }
      }
      // About 2 s on an idle machine (two missed heartbeats, then the consumer made again);
      // the bound is the one docs/reliability.md gives for a store lost: 15 s.
      while (!got.includes("after") && Date.now() - lostAt < 15_000) await new Promise((r) => setTimeout(r, 10));
      expect(got).toContain("after");
      expect(Date.now() - lostAt).toBeLessThan(15_000);
      expect(workStreamsMade).toBe(2);

      // Right after the work stream was made again, nats-server (2.9) may refuse a publish while it
      // opens the new stream's files: retried, as the engine's WorkRetry does.
      for (let i = 0; ; i++) {
        try {
          await bus.publishWork([create(RunWorkSchema, { runId: "r-after", appId: "app", functionId: "fn" })]);
          break;
        } catch (err) {
          if (i >= 50) throw err;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
      const pulled: string[] = [];
      const pullFrom = Date.now();
      while (pulled.length === 0 && Date.now() - pullFrom < 15_000) {
        try {
          for await (const d of bus.pullWork("app", 1, 1000, new AbortController().signal)) {
            pulled.push(d.data.runId);
            d.ack();
          }
        } catch {
          // The first pull may meet the consumer lost with its stream; the next makes it again.
        }
      }
      expect(pulled).toEqual(["r-after"]);
    } finally {
      await sub.stop();
      await nc.close();
      await bus.destroy();
      await bus.close();
    }
  });
});
