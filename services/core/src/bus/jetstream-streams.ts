import {
  JetStreamApiError,
  RetentionPolicy,
  StorageType,
  type ConsumerConfig,
  type JetStreamManager,
} from "@nats-io/jetstream";
import { nanos } from "@nats-io/transport-node";
import type { Logger } from "../runtime/log.js";

/** What the streams and consumers of one prefix are made with. */
export interface JetStreamStreamsOptions {
  prefix: string;
  /** Replicas of the streams and consumers (1 unless set). */
  replicas?: number | undefined;
  /** Ack wait of the consumers (30 s unless set). */
  ackWaitMs?: number | undefined;
  /** How long the event stream remembers event ids (10 min unless set). */
  duplicateWindowMs?: number | undefined;
  /** Called when the work stream was made (see JetStreamBusOptions). */
  onWorkStreamCreated?: (() => Promise<void>) | undefined;
  log?: Logger | undefined;
}

/**
 * The streams and durable consumers of one prefix: `<PREFIX>_EVENTS` and
 * `<PREFIX>_WORK`, made when missing and brought to the configured
 * replicas and ack wait when they exist, at start and again whenever NATS
 * may have lost them.
 */
export class JetStreamStreams {
  readonly eventsStream: string;
  readonly workStream: string;
  readonly eventsSubject: string;
  private restoring: Promise<void> | undefined;
  private restoredAt = 0;

  constructor(
    private readonly jsm: JetStreamManager,
    private readonly options: JetStreamStreamsOptions,
  ) {
    const upper = options.prefix.toUpperCase().replace(/[^A-Z0-9_-]/g, "_");
    this.eventsStream = `${upper}_EVENTS`;
    this.workStream = `${upper}_WORK`;
    this.eventsSubject = `${options.prefix}.events`;
  }

  get replicas(): number {
    return this.options.replicas ?? 1;
  }

  /** The consumers' ack wait, in nanoseconds. */
  get ackWait(): number {
    return nanos(this.options.ackWaitMs ?? 30_000);
  }

  /** Makes both streams, or brings them to the configured replicas. */
  async ensure(): Promise<void> {
    const { log, prefix } = this.options;
    const num_replicas = this.replicas;
    const created = await this.ensureStream({
      num_replicas,
      name: this.eventsStream,
      subjects: [this.eventsSubject],
      retention: RetentionPolicy.Limits,
      storage: StorageType.File,
      max_age: nanos(7 * 24 * 3600 * 1000),
      duplicate_window: nanos(this.options.duplicateWindowMs ?? 10 * 60 * 1000),
    });
    if (created) log?.info({ stream: this.eventsStream }, "created the event stream");
    const workCreated = await this.ensureStream({
      num_replicas,
      name: this.workStream,
      subjects: [`${prefix}.work.>`],
      retention: RetentionPolicy.Workqueue,
      storage: StorageType.File,
      duplicate_window: nanos(60 * 1000),
    });
    if (workCreated) {
      log?.info({ stream: this.workStream }, "created the work stream; the work of queued runs is published again");
      // Failing, it leaves the runs to the reconciler's backstop (STEPWISE_QUEUED_BACKSTOP_MS).
      await this.options.onWorkStreamCreated?.().catch((err: unknown) => log?.error({ err }, "making queued runs due after the work stream was made failed"));
    }
  }

  /**
   * Makes the streams again if they are gone (NATS lost its store while
   * the services ran): called when a publish finds no stream or a consumer
   * fails, at most once a second, in the background.
   */
  restore(): void {
    if (this.restoring || Date.now() - this.restoredAt < 1_000) return;
    this.restoredAt = Date.now();
    this.restoring = this.ensure()
      .catch((err: unknown) => this.options.log?.debug({ err }, "checking the streams failed"))
      .finally(() => (this.restoring = undefined));
  }

  /**
   * Makes a durable consumer, or brings an existing one to the configured
   * ack wait and replicas (which are set on config here).
   */
  async ensureConsumer(stream: string, config: Partial<ConsumerConfig> & { durable_name: string }): Promise<void> {
    const wanted = { ...config, ack_wait: this.ackWait, num_replicas: this.replicas };
    let info;
    try {
      info = await this.jsm.consumers.info(stream, wanted.durable_name);
    } catch (err) {
      if (!isNotFound(err)) throw err;
      try {
        await this.jsm.consumers.add(stream, wanted);
        return;
      } catch (addErr) {
        if (!String(addErr).includes("already")) throw addErr;
        info = await this.jsm.consumers.info(stream, wanted.durable_name);
      }
    }
    // Consumers made before the setting have 0 replicas (their stream's): they get it set too.
    if (info.config.ack_wait !== wanted.ack_wait || (info.config.num_replicas ?? 0) !== wanted.num_replicas) {
      await this.jsm.consumers.update(stream, wanted.durable_name, { ack_wait: wanted.ack_wait, num_replicas: wanted.num_replicas });
    }
  }

  /** Deletes both streams; for tests and uninstall. */
  async destroy(): Promise<void> {
    for (const s of [this.eventsStream, this.workStream]) {
      await this.jsm.streams.delete(s).catch(() => false);
    }
  }

  /**
   * Makes a stream, or brings an existing one to the configured number of
   * replicas (JetStream moves it while it serves). True when it made it.
   */
  private async ensureStream(config: Parameters<JetStreamManager["streams"]["add"]>[0] & { name: string; num_replicas: number }): Promise<boolean> {
    let info;
    try {
      info = await this.jsm.streams.info(config.name);
    } catch (err) {
      if (!isNotFound(err)) throw err;
      try {
        await this.jsm.streams.add(config);
        return true;
      } catch (addErr) {
        // Another service created it at the same moment.
        if (!String(addErr).includes("already in use")) throw addErr;
        info = await this.jsm.streams.info(config.name);
      }
    }
    if (info.config.num_replicas !== config.num_replicas) {
      this.options.log?.info({ stream: config.name, from: info.config.num_replicas, to: config.num_replicas }, "changing the replicas of a stream");
      await this.jsm.streams.update(config.name, { num_replicas: config.num_replicas });
    }
    return false;
  }
}

/** Whether a JetStream API error says the stream or consumer does not exist. */
export function isNotFound(err: unknown): boolean {
  if (err instanceof JetStreamApiError) return err.code === 404 || /not found/i.test(err.message);
  return /not found/i.test(String(err));
}
