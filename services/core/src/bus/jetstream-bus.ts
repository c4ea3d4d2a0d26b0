import { create, fromBinary, toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import {
  AckPolicy,
  DeliverPolicy,
  jetstream,
  jetstreamManager,
  type Consumer,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
} from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { EventRecordSchema, RunCancelledSchema, RunsCancelledSchema, RunsEndedSchema, RunWorkSchema, type EventRecord, type RunWork } from "@stepwise/proto";
import { backoffMs, type Bus, type ConsumeEventsOptions, type Delivery, type RunCancel, type RunEnd, type Subscription } from "./bus.js";
import { JetStreamPublishError, JetStreamPublisher } from "./jetstream-publisher.js";
import { isNotFound, JetStreamStreams } from "./jetstream-streams.js";
import { runEndFromProto, runEndToProto } from "./run-end.js";
import type { Logger } from "../runtime/log.js";
import type { ServiceMetrics } from "../runtime/metrics.js";

/** Options of the JetStream bus. */
export interface JetStreamBusOptions {
  /** NATS server URL(s), comma separated. */
  url: string;
  /**
   * Prefix of stream names, subjects and consumer names, so several
   * installations (or test suites) share one NATS without meeting.
   */
  prefix: string;
  /** Name shown in NATS monitoring. */
  name?: string;
  /**
   * Replicas of the streams and their consumers: 1 on one server, 3 on a
   * three-node cluster (a publish is then acknowledged once a majority of
   * the stream's nodes stored it). Applied to existing streams on connect.
   */
  replicas?: number;
  /**
   * How long a message taken by a scheduler or an executor stays with it
   * without an acknowledgement (or a `working()` to keep it) before it is
   * delivered to another: how long work and events wait after the process
   * holding them died or froze. The services set it to their lease.
   */
  ackWaitMs?: number;
  /** How long JetStream remembers event ids for deduplication. */
  duplicateWindowMs?: number;
  /**
   * Called when this process created the work stream: at the first start,
   * or because NATS lost it (a server that lost its store, with one
   * replica). The runs QUEUED in the journal may then have lost their work
   * messages; the services make them due for the reconciler at once.
   */
  onWorkStreamCreated?: () => Promise<void>;
  /** Where to report messages that had to be dropped. */
  log?: Logger;
  /** Where publish latencies go. */
  metrics?: ServiceMetrics | undefined;
}

/**
 * The JetStream bus. Streams: `<PREFIX>_EVENTS` (subject `<prefix>.events`,
 * limits retention, deduplicated by event id) and `<PREFIX>_WORK` (subjects
 * `<prefix>.work.<app>.<function>`, work-queue retention: a message is gone
 * once an executor acked it). One durable pull consumer per app on the work
 * stream, shared by every executor serving that app.
 */
export class JetStreamBus implements Bus {
  private readonly consumersReady = new Map<string, Promise<string>>();
  private readonly pullConsumers = new Map<string, Promise<Consumer>>();
  /** Plain NATS subject of run-end announcements (outside the streams' subjects). */
  private readonly endedSubject: string;
  private readonly cancelledSubject: string;
  private readonly publisher: JetStreamPublisher;
  private readonly eventsPublished: ((seconds: number) => void) | undefined;
  private readonly workPublished: ((seconds: number) => void) | undefined;
  private readonly streams: JetStreamStreams;

  private constructor(
    private readonly nc: NatsConnection,
    jsm: JetStreamManager,
    private readonly js: JetStreamClient,
    private readonly options: JetStreamBusOptions,
  ) {
    this.streams = new JetStreamStreams(jsm, options);
    this.endedSubject = `${options.prefix}.ended`;
    this.cancelledSubject = `${options.prefix}.cancelled`;
    this.publisher = new JetStreamPublisher(nc);
    this.eventsPublished = options.metrics?.bus.publishLatency("events");
    this.workPublished = options.metrics?.bus.publishLatency("work");
  }

  /** Connects to NATS and creates the streams when missing. */
  static async connect(options: JetStreamBusOptions): Promise<JetStreamBus> {
    const nc = await connect({
      servers: options.url.split(","),
      name: options.name ?? "stepwise",
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
    });
    // JetStream answers nothing while a cluster elects its leaders (a node
    // rejoining, a stream moving): the streams are looked for again, 250 ms
    // to 2 s apart, for up to a minute before the service gives up.
    const deadline = Date.now() + STARTUP_PATIENCE_MS;
    for (let pause = 250; ; pause = Math.min(2_000, pause * 2)) {
      try {
        const jsm = await jetstreamManager(nc);
        const bus = new JetStreamBus(nc, jsm, jetstream(nc), options);
        await bus.streams.ensure();
        return bus;
      } catch (err) {
        if (Date.now() + pause > deadline) {
          await nc.close().catch(() => undefined);
          throw new Error(`NATS JetStream did not answer for the streams of prefix ${options.prefix} within ${STARTUP_PATIENCE_MS / 1000} s: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
        }
        options.log?.warn({ err }, "NATS JetStream is not ready; looking for the streams again shortly");
        await new Promise((r) => setTimeout(r, pause));
      }
    }
  }

  async publishEvents(records: readonly EventRecord[]): Promise<void> {
    // Pipelined: every publish is in flight at once, then all acks awaited.
    await Promise.all(
      records.map((r) =>
        this.publisher.publish(this.streams.eventsSubject, toBinary(EventRecordSchema, r), r.id, this.eventsPublished),
      ),
    ).catch((err: unknown) => this.afterPublishFailed(err));
  }

  async consumeEvents(
    handler: (record: EventRecord, delivery: Delivery<EventRecord>) => Promise<void>,
    options: ConsumeEventsOptions,
  ): Promise<Subscription> {
    const durable = `${this.options.prefix}-scheduler`.replace(/[.*>]/g, "_");
    const openConsumer = async () => {
      await this.streams.ensureConsumer(this.streams.eventsStream, {
        durable_name: durable,
        ack_policy: AckPolicy.Explicit,
        deliver_policy: DeliverPolicy.All,
        max_ack_pending: Math.max(1000, options.concurrency * 4),
        max_deliver: -1,
      });
      return this.js.consumers.get(this.streams.eventsStream, durable);
    };
    let consumer = await openConsumer();
    // Events taken (handled, or waiting for a slot), with when they came:
    // those held longer than a third of the ack wait are kept with
    // working(), so a busy scheduler keeps its events while one that died
    // or froze loses them to another within the ack wait.
    const taken = new Map<JsMsg, number>();
    const waiting: Array<{ m: JsMsg; record: EventRecord }> = [];
    const inflight = new Set<Promise<void>>();
    let slots = options.concurrency;
    let stopped = false;
    let messages: Awaited<ReturnType<Consumer["consume"]>> | undefined;
    let first = true;
    const handle = (m: JsMsg, record: EventRecord) => {
      slots--;
      const delivery = toDelivery(m, record);
      const p = handler(delivery.data, delivery)
        .then(
          () => delivery.ack(),
          () => delivery.nak(backoffMs(delivery.deliveryCount)),
        )
        .finally(() => {
          taken.delete(m);
          inflight.delete(p);
          slots++;
          pump();
        });
      inflight.add(p);
    };
    const pump = () => {
      while (slots > 0 && waiting.length > 0 && !stopped) {
        const next = waiting.shift()!;
        handle(next.m, next.record);
      }
    };
    const keepEvery = Math.max(100, Math.floor((this.options.ackWaitMs ?? 30_000) / 3));
    const keeper = setInterval(() => {
      const before = Date.now() - keepEvery;
      for (const [m, at] of taken) if (at < before) m.working();
    }, keepEvery);
    keeper.unref();
    const consumeOnce = async () => {
      // After a failure the consumer (or its stream) may be gone: made again.
      if (!first) consumer = await openConsumer();
      first = false;
      // Idle heartbeats every second: a pull lost with the server that held
      // it (a cluster node died) is noticed after two missed, and renewed.
      // The pulls expire after 3 s, which also sets nats.js's pause between
      // its looks for a consumer it lost (1.5-4.5 s; 15-45 s by default).
      // A consumer deleted (or lost with NATS's store) ends the iteration, to be made again.
      messages = await consumer.consume({
        max_messages: options.concurrency * 2,
        expires: 3_000,
        idle_heartbeat: HEARTBEAT_MS,
        abort_on_missing_resource: true,
      });
      for await (const m of messages) {
        const record = this.decode(m, EventRecordSchema);
        if (!record) continue;
        taken.set(m, Date.now());
        waiting.push({ m, record });
        pump();
      }
    };
    // Consumes until stop(): a consumer that ends or fails otherwise is
    // reported and started again, never left dead in silence.
    const loop = (async () => {
      while (!stopped) {
        try {
          await consumeOnce();
        } catch (err) {
          if (!stopped) this.options.log?.error({ err }, "event consumer failed; starting it again");
        }
        // The pause comes first: a consumer ends the moment its stream is
        // deleted, while the deletion is still under way in nats-server, and a
        // stream made again at once (2.9) kept its messages from a consumer
        // made on it later (num_pending 1, a pull waiting, nothing delivered).
        if (!stopped) await new Promise((r) => setTimeout(r, 1000));
        if (!stopped) this.restoreStreams();
      }
    })();
    return {
      async stop() {
        stopped = true;
        clearInterval(keeper);
        await messages?.close();
        // Taken but not begun: back at once, for another scheduler.
        for (const w of waiting.splice(0)) {
          taken.delete(w.m);
          w.m.nak();
        }
        await loop;
        await Promise.allSettled([...inflight]);
      },
    };
  }

  async publishWork(work: readonly RunWork[]): Promise<void> {
    await Promise.all(
      work.map((w) => this.publisher.publish(this.workSubject(w.appId, w.functionId), toBinary(RunWorkSchema, w), undefined, this.workPublished)),
    ).catch((err: unknown) => this.afterPublishFailed(err));
  }

  async *pullWork(
    appId: string,
    max: number,
    expiresMs: number,
    signal: AbortSignal,
  ): AsyncIterable<Delivery<RunWork>> {
    const consumer = await this.workPullConsumer(appId);
    // Aborted before the pull was sent (or while the consumer was looked up):
    // send none, so no message is handed to a pull nobody reads.
    if (signal.aborted) return;
    const onAbort = () => void batch?.close();
    let batch: Awaited<ReturnType<typeof consumer.fetch>> | undefined;
    try {
      // Heartbeats as for events: a pull lost with its server fails within two seconds, and the caller pulls again.
      const expires = Math.max(1000, expiresMs);
      batch = await consumer.fetch({ max_messages: max, expires, idle_heartbeat: Math.min(HEARTBEAT_MS, expires / 2) });
      signal.addEventListener("abort", onAbort, { once: true });
      // The listener never fires for an abort that came while fetch() was awaited.
      if (signal.aborted) onAbort();
      for await (const m of batch) {
        const work = this.decode(m, RunWorkSchema);
        if (work) yield toDelivery(m, work);
      }
    } catch (err) {
      // The consumer may be gone (deleted behind our back, or NATS lost its
      // store): look it up, and create it if need be, at the next pull.
      this.pullConsumers.delete(appId);
      this.consumersReady.delete(appId);
      this.restoreStreams();
      throw err;
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
  }

  /** A publish that found no stream may have met streams NATS lost: they are made again. Rethrows. */
  /** The streams looked for again (see JetStreamStreams.restore), unless the connection is closed. */
  private restoreStreams(): void {
    if (!this.nc.isClosed()) this.streams.restore();
  }

  private afterPublishFailed(err: unknown): never {
    if (err instanceof JetStreamPublishError && err.noStream) this.restoreStreams();
    throw err;
  }

  /**
   * The handle of an app's work consumer, looked up once and kept: every
   * lookup is a JetStream API request, and executors pull often.
   */
  private workPullConsumer(appId: string): Promise<Consumer> {
    let consumer = this.pullConsumers.get(appId);
    if (!consumer) {
      consumer = this.workConsumer(appId).then((durable) => this.js.consumers.get(this.streams.workStream, durable));
      this.pullConsumers.set(appId, consumer);
      consumer.catch((err: unknown) => {
        this.pullConsumers.delete(appId);
        if (isNotFound(err)) this.consumersReady.delete(appId);
      });
    }
    return consumer;
  }

  private workSubject(appId: string, functionId: string): string {
    return `${this.options.prefix}.work.${appId}.${functionId}`;
  }

  private workConsumer(appId: string): Promise<string> {
    const key = appId;
    let ready = this.consumersReady.get(key);
    if (!ready) {
      const durable = `${this.options.prefix}-work-${appId}`.replace(/[.*>]/g, "_");
      ready = this.streams.ensureConsumer(this.streams.workStream, {
        durable_name: durable,
        filter_subject: `${this.options.prefix}.work.${appId}.*`,
        ack_policy: AckPolicy.Explicit,
        deliver_policy: DeliverPolicy.All,
        max_ack_pending: 100_000,
        max_deliver: -1,
      }).then(() => durable);
      ready.catch(() => this.consumersReady.delete(key));
      this.consumersReady.set(key, ready);
    }
    return ready;
  }

  /**
   * Decodes a message; one that does not decode can never be handled, so it
   * is terminated (not redelivered) instead of stopping the consumer.
   */
  private decode<Desc extends DescMessage>(m: JsMsg, schema: Desc): MessageShape<Desc> | undefined {
    try {
      return fromBinary(schema, m.data);
    } catch (err) {
      this.options.log?.error({ err, subject: m.subject, seq: m.seq }, "dropping a message that does not decode");
      m.term();
      return undefined;
    }
  }

  /** Deletes this prefix's streams; for tests and uninstall. */
  async destroy(): Promise<void> {
    await this.streams.destroy();
  }

  announceRunsEnded(runs: readonly RunEnd[]): void {
    if (runs.length === 0) return;
    this.announce(this.endedSubject, toBinary(RunsEndedSchema, create(RunsEndedSchema, { runs: runs.map(runEndToProto) })));
  }

  watchRunsEnded(onEnded: (runs: RunEnd[]) => void): Promise<Subscription> {
    return this.watch(this.endedSubject, (data) => fromBinary(RunsEndedSchema, data).runs.map(runEndFromProto), onEnded);
  }

  announceRunsCancelled(runs: readonly RunCancel[]): void {
    if (runs.length === 0) return;
    const message = create(RunsCancelledSchema, { runs: runs.map((r) => create(RunCancelledSchema, r)) });
    this.announce(this.cancelledSubject, toBinary(RunsCancelledSchema, message));
  }

  watchRunsCancelled(onCancelled: (runs: RunCancel[]) => void): Promise<Subscription> {
    const decode = (data: Uint8Array) =>
      fromBinary(RunsCancelledSchema, data).runs.map((r) => ({ runId: r.runId, executorId: r.executorId, lease: r.lease, reason: r.reason }));
    return this.watch(this.cancelledSubject, decode, onCancelled);
  }

  /** Publishes on a plain subject, at most once. */
  private announce(subject: string, data: Uint8Array): void {
    try {
      this.nc.publish(subject, data);
    } catch (err) {
      // Closed or reconnecting: the receivers find out another way (see Bus).
      this.options.log?.debug({ err, subject }, "an announcement failed");
    }
  }

  /** Subscribes to a plain subject; an undecodable message is dropped. */
  private async watch<T>(subject: string, decode: (data: Uint8Array) => T, on: (value: T) => void): Promise<Subscription> {
    const sub = this.nc.subscribe(subject, {
      callback: (err, msg) => {
        if (err) return;
        let value: T;
        try {
          value = decode(msg.data);
        } catch (e) {
          this.options.log?.warn({ err: e, subject }, "an undecodable announcement was dropped");
          return;
        }
        on(value);
      },
    });
    return {
      stop: async () => {
        sub.unsubscribe();
      },
    };
  }

  async close(): Promise<void> {
    await this.nc.drain().catch(() => this.nc.close());
    this.publisher.close();
  }
}

/** How long a service waits at start for JetStream to answer for its streams. */
const STARTUP_PATIENCE_MS = 60_000;

/** Idle heartbeat asked of the server on every pull (JetStream takes at most half the pull's expiry); two missed end or renew the pull. */
const HEARTBEAT_MS = 1_000;

function toDelivery<T>(m: JsMsg, data: T): Delivery<T> {
  return {
    data,
    deliveryCount: m.info.deliveryCount,
    ack: () => m.ack(),
    nak: (delayMs?: number) => m.nak(delayMs),
    working: () => m.working(),
  };
}
