import { randomBytes } from "node:crypto";
import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { JetStreamPublishError, JetStreamPublisher } from "./jetstream-publisher.js";

const NATS_URL = process.env["TEST_NATS_URL"] ?? "nats://127.0.0.1:4222";

// Against the real NATS JetStream: what JetStream acknowledges, refuses or
// never answers.
describe("JetStreamPublisher", () => {
  const name = `PUBTEST_${randomBytes(4).toString("hex")}`;
  const subject = `${name.toLowerCase()}.x`;
  let nc: NatsConnection;
  let jsm: JetStreamManager;

  beforeAll(async () => {
    nc = await connect({ servers: NATS_URL });
    jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name, subjects: [subject], duplicate_window: 60_000_000_000 });
  });

  afterAll(async () => {
    await jsm.streams.delete(name).catch(() => false);
    await nc.close();
  });

  it("resolves once each message is stored, pipelined, and stores a message id only once", async () => {
    const publisher = new JetStreamPublisher(nc);
    const data = new TextEncoder().encode("hello");
    await Promise.all(Array.from({ length: 200 }, (_, i) => publisher.publish(subject, data, `id-${i}`)));
    await Promise.all(Array.from({ length: 50 }, (_, i) => publisher.publish(subject, data, `id-${i}`)));
    await publisher.publish(subject, data);
    expect((await jsm.streams.info(name)).state.messages).toBe(201);
    publisher.close();
  });

  it("fails with 503 when no stream listens on the subject, and with 408 when nothing answers in time", async () => {
    const publisher = new JetStreamPublisher(nc, 300);
    const none = await publisher.publish(`${subject}-nobody`, new Uint8Array(1)).catch((e: unknown) => e);
    expect(none).toBeInstanceOf(JetStreamPublishError);
    expect((none as JetStreamPublishError).code).toBe(503);

    // A plain subscriber takes the message and never acknowledges it.
    const silent = nc.subscribe(`${subject}-silent`);
    const t0 = Date.now();
    const late = await publisher.publish(`${subject}-silent`, new Uint8Array(1)).catch((e: unknown) => e);
    expect((late as JetStreamPublishError).code).toBe(408);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(290);
    silent.unsubscribe();
    publisher.close();
    await expect(publisher.publish(subject, new Uint8Array(1))).rejects.toBeInstanceOf(JetStreamPublishError);
  });

  it("fails what is in flight when the connection drops, without waiting for the timeout, and publishes again once reconnected", async () => {
    const own = await connect({ servers: NATS_URL, reconnectTimeWait: 50 });
    const states: string[] = [];
    const reconnected = (async () => {
      for await (const s of own.status()) {
        states.push(s.type);
        if (s.type === "reconnect") return;
      }
    })();
    const publisher = new JetStreamPublisher(own, 10_000);
    const silent = own.subscribe(`${subject}-silent2`);
    await own.flush();
    const t0 = Date.now();
    const lost = publisher.publish(`${subject}-silent2`, new Uint8Array(1)).catch((e: unknown) => e);
    await own.flush();
    await own.reconnect();
    const err = await lost;
    expect(err).toBeInstanceOf(JetStreamPublishError);
    expect((err as JetStreamPublishError).code).toBe(503);
    expect(Date.now() - t0).toBeLessThan(5_000);
    silent.unsubscribe();
    await reconnected;
    expect(states).toContain("disconnect");
    const before = (await jsm.streams.info(name)).state.messages;
    await publisher.publish(subject, new Uint8Array(1));
    expect((await jsm.streams.info(name)).state.messages).toBe(before + 1);
    publisher.close();
    await own.close();
  });
});
