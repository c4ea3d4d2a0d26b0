// A diagnostic timeline, not a check: once a second, the runs by status
// and the steps journaled (from Postgres), and the state of the streams
// and their consumers (from JetStream), one JSON line each to
// timeline.jsonl in the log folder. When a check fails, it shows what the
// engine was doing meanwhile.
import { appendFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import type pg from "pg";
import { PREFIX } from "./chaos-deployment.js";

export class Sampler {
  private stopped = false;
  private loop: Promise<void> | undefined;
  private readonly file: string;

  constructor(
    private readonly pool: pg.Pool,
    private readonly natsUrls: string[],
    logDir: string,
  ) {
    this.file = join(logDir, "timeline.jsonl");
  }

  start(): void {
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.loop;
  }

  private async run(): Promise<void> {
    let nc: NatsConnection | undefined;
    let jsm: JetStreamManager | undefined;
    try {
      nc = await connect({ servers: this.natsUrls, maxReconnectAttempts: -1, reconnectTimeWait: 250 });
      jsm = await jetstreamManager(nc, { timeout: 2_000 });
    } catch (err) {
      appendFileSync(this.file, `${JSON.stringify({ t: new Date().toISOString(), natsError: String(err) })}\n`);
    }
    while (!this.stopped) {
      const started = Date.now();
      const line: Record<string, unknown> = { t: new Date().toISOString() };
      await Promise.all([this.sampleJournal(line), jsm ? this.sampleStreams(jsm, line) : Promise.resolve()]);
      appendFileSync(this.file, `${JSON.stringify(line)}\n`);
      await sleep(Math.max(0, 1_000 - (Date.now() - started)));
    }
    await nc?.close().catch(() => {});
  }

  private async sampleJournal(line: Record<string, unknown>): Promise<void> {
    try {
      const runs = await this.pool.query<{ status: string; n: string }>("SELECT status, count(*) AS n FROM runs GROUP BY status");
      line["runs"] = Object.fromEntries(runs.rows.map((r) => [r.status, Number(r.n)]));
      const steps = await this.pool.query<{ n: string | null }>("SELECT max(seq) AS n FROM steps");
      line["steps"] = Number(steps.rows[0]?.n ?? 0);
    } catch (err) {
      line["pgError"] = String((err as Error).message ?? err);
    }
  }

  private async sampleStreams(jsm: JetStreamManager, line: Record<string, unknown>): Promise<void> {
    const upper = PREFIX.toUpperCase();
    for (const stream of [`${upper}_EVENTS`, `${upper}_WORK`]) {
      try {
        const s = await jsm.streams.info(stream);
        const consumers: Record<string, unknown> = {};
        for await (const c of jsm.consumers.list(stream)) {
          consumers[c.name] = { pending: c.num_pending, ackPending: c.num_ack_pending, waiting: c.num_waiting, leader: c.cluster?.leader };
        }
        line[stream] = {
          messages: s.state.messages,
          leader: s.cluster?.leader,
          replicas: s.cluster?.replicas?.map((r) => `${r.name}${r.current ? "" : " (not current)"}${r.offline ? " (offline)" : ""}`),
          consumers,
        };
      } catch (err) {
        line[stream] = { error: String((err as Error).message ?? err) };
      }
    }
  }
}
