import { create, fromBinary, toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import {
  AckPolicy,
  DeliverPolicy,
  jetstream,
  jetstreamManager,
  JetStreamApiError,
  RetentionPolicy,
  StorageType,
  type Consumer,
  type ConsumerConfig,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
} from "@nats-io/jetstream";
import { connect, nanos, type NatsConnection } from "@nats-io/transport-node";
import { EventRecordSchema, RunCancelledSchema, RunsCancelledSchema, RunsEndedSchema, RunWorkSchema, type EventRecord, type RunWork } from "@stepwise/proto";
import { backoffMs, type Bus, type ConsumeEventsOptions, type Delivery, type RunCancel, type RunEnd, type Subscription } from "./bus.js";
import { JetStreamPublisher } from "./jetstream-publisher.js";
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
  /** How long an unacknowledged event waits before redelivery. */
  eventAckWaitMs?: number;
  /** How long JetStream remembers event ids for deduplication. */
  duplicateWindowMs?: number;
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
  private readonly eventsSubject: string;
  /** Plain NATS subject of run-end announcements (outside the streams' subjects). */
  private readonly endedSubject: string;
  private readonly cancelledSubject: string;
  private readonly eventsStream: string;
  private readonly workStream: string;
  private readonly publisher: JetStreamPublisher;
  private readonly eventsPublished: ((seconds: number) => void) | undefined;
  private readonly workPublished: ((seconds: number) => void) | undefined;

  private constructor(
    private readonly nc: NatsConnection,
    private readonly jsm: JetStreamManager,
    private readonly js: JetStreamClient,
    private readonly options: JetStreamBusOptions,
  ) {
    const upper = options.prefix.toUpperCase().replace(/[^A-Z0-9_-]/g, "_");
    this.eventsStream = `${upper}_EVENTS`;
    this.workStream = `${upper}_WORK`;
    this.eventsSubject = `${options.prefix}.events`;
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
    const jsm = await jetstreamManager(nc);
    const bus = new JetStreamBus(nc, jsm, jetstream(nc), options);
    await bus.ensureStreams();
    return bus;
  }

  private async ensureStreams(): Promise<void> {
    const p = this.options.prefix;
    await this.ensureStream({
      name: this.eventsStream,
      subjects: [this.eventsSubject],
      retention: RetentionPolicy.Limits,
      storage: StorageType.File,
      max_age: nanos(7 * 24 * 3600 * 1000),
      duplicate_window: nanos(this.options.duplicateWindowMs ?? 10 * 60 * 1000),
    });
    await this.ensureStream({
      name: this.workStream,
      subjects: [`${p}.work.>`],
      retention: RetentionPolicy.Workqueue,
      storage: StorageType.File,
      duplicate_window: nanos(60 * 1000),
    });
  }

  private async ensureStream(config: Parameters<JetStreamManager["streams"]["add"]>[0] & { name: string }) {
    try {
      await this.jsm.streams.info(config.name);
    } catch (err) {
      if (!isNotFound(err)) throw err;
      try {
        await this.jsm.streams.add(config);
      } catch (addErr) {
        // Another service created it at the same moment.
        if (!String(addErr).includes("already in use")) throw addErr;
      }
    }
  }

  async publishEvents(records: readonly EventRecord[]): Promise<void> {
    // Pipelined: every publish is in flight at once, then all acks awaited.
    await Promise.all(
      records.map((r) =>
        this.publisher.publish(this.eventsSubject, toBinary(EventRecordSchema, r), r.id, this.eventsPublished),
      ),
    );
  }

  async consumeEvents(
    handler: (record: EventRecord, delivery: Delivery<EventRecord>) => Promise<void>,
    options: ConsumeEventsOptions,
  ): Promise<Subscription> {
    const durable = `${this.options.prefix}-scheduler`.replace(/[.*>]/g, "_");
    await this.ensureConsumer(this.eventsStream, {
      durable_name: durable,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      ack_wait: nanos(this.options.eventAckWaitMs ?? 30_000),
      max_ack_pending: Math.max(1000, options.concurrency * 4),
      max_deliver: -1,
    });
    const consumer = await this.js.consumers.get(this.eventsStream, durable);
    const inflight = new Set<Promise<void>>();
    let slots = options.concurrency;
    let wake: (() => void) | undefined;
    let stopped = false;
    let messages: Awaited<ReturnType<typeof consumer.consume>> | undefined;
    const consumeOnce = async () => {
      messages = await consumer.consume({ max_messages: options.concurrency * 2 });
      for await (const m of messages) {
        const record = this.decode(m, EventRecordSchema);
        if (!record) continue;
        while (slots === 0) await new Promise<void>((r) => (wake = r));
        slots--;
        const delivery = toDelivery(m, record);
        const p = handler(delivery.data, delivery)
          .then(
            () => delivery.ack(),
            () => delivery.nak(backoffMs(delivery.deliveryCount)),
          )
          .finally(() => {
            slots++;
            inflight.delete(p);
            wake?.();
            wake = undefined;
          });
        inflight.add(p);
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
        if (!stopped) await new Promise((r) => setTimeout(r, 1000));
      }
    })();
    return {
      async stop() {
        stopped = true;
        await messages?.close();
        wake?.();
        await loop;
        await Promise.allSettled([...inflight]);
      },
    };
  }

  async publishWork(work: readonly RunWork[]): Promise<void> {
    await Promise.all(
      work.map((w) => this.publisher.publish(this.workSubject(w.appId, w.functionId), toBinary(RunWorkSchema, w), undefined, this.workPublished)),
    );
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
      batch = await consumer.fetch({ max_messages: max, expires: Math.max(1000, expiresMs) });
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
      throw err;
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
  }

  /**
   * The handle of an app's work consumer, looked up once and kept: every
   * lookup is a JetStream API request, and executors pull often.
   */
  private workPullConsumer(appId: string): Promise<Consumer> {
    let consumer = this.pullConsumers.get(appId);
    if (!consumer) {
      consumer = this.workConsumer(appId).then((durable) => this.js.consumers.get(this.workStream, durable));
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
      ready = this.ensureConsumer(this.workStream, {
        durable_name: durable,
        filter_subject: `${this.options.prefix}.work.${appId}.*`,
        ack_policy: AckPolicy.Explicit,
        deliver_policy: DeliverPolicy.All,
        ack_wait: nanos(30_000),
        max_ack_pending: 100_000,
        max_deliver: -1,
      }).then(() => durable);
      ready.catch(() => this.consumersReady.delete(key));
      this.consumersReady.set(key, ready);
    }
    return ready;
  }

  private async ensureConsumer(stream: string, config: Partial<ConsumerConfig> & { durable_name: string }) {
    try {
      await this.jsm.consumers.info(stream, config.durable_name);
    } catch (err) {
      if (!isNotFound(err)) throw err;
      await this.jsm.consumers.add(stream, config);
    }
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
    for (const s of [this.eventsStream, this.workStream]) {
      await this.jsm.streams.delete(s).catch(() => false);
    }
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

function isNotFound(err: unknown): boolean {
  if (err instanceof JetStreamApiError) return err.code === 404 || /not found/i.test(err.message);
  return /not found/i.test(String(err));
}

function toDelivery<T>(m: JsMsg, data: T): Delivery<T> {
  return {
    data,
    deliveryCount: m.info.deliveryCount,
    ack: () => m.ack(),
    nak: (delayMs?: number) => m.nak(delayMs),
    working: () => m.working(),
  };
}
