import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { tlsOptions } from "./tls.js";
import { pushable } from "it-pushable";
import {
  ConnectRequestSchema,
  DrainSchema,
  HeartbeatSchema,
  RegisterSchema,
  RequestBatchSchema,
  TurnBatch,
  WorkerService,
  type ConnectRequest,
  type ConnectResponse,
} from "@stepwise/proto";
import type { StepwiseFunction } from "./function.js";
import { functionConfigMessage } from "./function-config-message.js";
import { RunExecution } from "./run-execution.js";
import { type StepwiseErrorCode, toStepwiseError } from "./stepwise-error.js";
import { apiKeyOptions } from "./api-key.js";
import { SDK_VERSION } from "./version.js";
import { requestStream } from "./wire.js";

const SDK = `@stepwise/sdk/${SDK_VERSION}`;

/** Answers to a connection that a new one would get again. */
const REFUSED = new Set<StepwiseErrorCode>(["invalid_argument", "unauthenticated", "permission_denied"]);

/** Options of a Worker. */
export interface WorkerOptions {
  /** URL of the executor (or of `stepwise dev`), such as http://127.0.0.1:8289; https:// for TLS. */
  url?: string;
  /** For an https:// URL: a CA certificate (PEM) to trust besides the system's; STEPWISE_CA_FILE names one too. */
  ca?: string | Buffer;
  /** API key (default STEPWISE_API_KEY): a worker key of the functions' app. */
  apiKey?: string;
  /** The functions to serve; all of one app. */
  functions: readonly StepwiseFunction[];
  /** Runs executed at once. Default 10. */
  capacity?: number;
  /** Drain and exit the process on SIGTERM and SIGINT. Default true. */
  handleSignals?: boolean;
  /** Longest wait between reconnection attempts. Default 5 s. */
  maxReconnectDelayMs?: number;
  /** How long a drain waits for runs in progress. Default 30 s. */
  drainTimeoutMs?: number;
  /** Called with connection errors, which the worker retries on its own. */
  onError?: (err: Error) => void;
}

/**
 * A Worker executes an app's functions. It holds one persistent
 * bidirectional stream to the executor (no inbound endpoint), registers the
 * functions, runs what it is sent, reconnects with backoff when the stream
 * drops, and drains on SIGTERM: it takes no new runs and finishes the ones
 * it holds before it closes.
 *
 * @example
 * ```ts
 * const worker = new Worker({ url: "http://127.0.0.1:8289", functions: [orderProcessing] });
 * await worker.connect();
 * ```
 */
export class Worker {
  private readonly fns = new Map<string, StepwiseFunction>();
  private readonly appId: string;
  private readonly executions = new Map<string, RunExecution>();
  private readonly running = new Set<Promise<void>>();
  private readonly options: Required<Omit<WorkerOptions, "onError" | "url" | "ca" | "apiKey">> & {
    onError: ((err: Error) => void) | undefined;
    ca: string | Buffer | undefined;
    apiKey: string | undefined;
  };
  private readonly url: string;
  private closed = false;
  private draining = false;
  private loop: Promise<void> | undefined;
  private current: { send: (m: ConnectRequest) => void; end: () => void; abort: AbortController } | undefined;
  private onSignal: (() => void) | undefined;

  constructor(options: WorkerOptions) {
    const first = options.functions[0];
    if (!first) throw new TypeError("a Worker needs at least one function");
    const all = options.functions.flatMap((fn) => (fn.failureHandler ? [fn, fn.failureHandler] : [fn]));
    for (const fn of all) {
      if (fn.appId !== first.appId) {
        throw new TypeError(`all functions of a Worker belong to one app: ${fn.config.id} is of ${fn.appId}, not ${first.appId}`);
      }
      if (this.fns.has(fn.config.id)) throw new TypeError(`function ${fn.config.id} is given twice`);
      this.fns.set(fn.config.id, fn);
    }
    this.appId = first.appId;
    this.url = options.url ?? process.env["STEPWISE_EXECUTOR_URL"] ?? "http://127.0.0.1:8289";
    this.options = {
      functions: options.functions,
      capacity: options.capacity ?? 10,
      handleSignals: options.handleSignals ?? true,
      maxReconnectDelayMs: options.maxReconnectDelayMs ?? 5_000,
      drainTimeoutMs: options.drainTimeoutMs ?? 30_000,
      onError: options.onError,
      ca: options.ca,
      apiKey: options.apiKey,
    };
  }

  /** Number of runs executing now. */
  get activeRuns(): number {
    return this.executions.size;
  }

  /**
   * Connects and registers. Resolves once the executor accepted the
   * registration the first time; afterwards the worker keeps reconnecting by
   * itself until close(). Rejects if the executor refuses the registration.
   */
  connect(): Promise<void> {
    if (this.loop) throw new Error("connect() was already called");
    let first: { resolve: () => void; reject: (e: Error) => void } | undefined;
    const registered = new Promise<void>((resolve, reject) => (first = { resolve, reject }));
    this.loop = this.run(
      () => {
        first?.resolve();
        first = undefined;
      },
      (err) => {
        first?.reject(err);
        first = undefined;
      },
    );
    if (this.options.handleSignals) {
      this.onSignal = () => {
        this.close().then(
          () => process.exit(0),
          () => process.exit(1),
        );
      };
      process.once("SIGTERM", this.onSignal);
      process.once("SIGINT", this.onSignal);
    }
    return registered;
  }

  /**
   * Drains and closes: tells the executor to send nothing new, waits for
   * the runs in progress (up to drainTimeoutMs), then ends the stream.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.draining = true;
    this.current?.send(
      create(ConnectRequestSchema, { message: { case: "drain", value: create(DrainSchema, { reason: "worker closing" }) } }),
    );
    const deadline = Date.now() + this.options.drainTimeoutMs;
    while (this.running.size > 0 && Date.now() < deadline) {
      await Promise.race([Promise.allSettled([...this.running]), new Promise((r) => setTimeout(r, 100))]);
    }
    this.closed = true;
    // Half-close: what is queued (the last run results) still goes out, and
    // the executor ends the stream once it has recorded it.
    this.current?.end();
    const ended = await Promise.race([
      this.loop?.then(() => true, () => true),
      new Promise<false>((r) => setTimeout(() => r(false), 5_000).unref()),
    ]);
    if (!ended) this.current?.abort.abort();
    if (this.onSignal) {
      process.off("SIGTERM", this.onSignal);
      process.off("SIGINT", this.onSignal);
    }
    await this.loop?.catch(() => {});
  }

  /**
   * Drops the connection at once without draining, as a crash would; runs
   * in progress are abandoned and the executor hands them to other workers.
   * For tests of failure handling.
   */
  async kill(): Promise<void> {
    this.closed = true;
    for (const ex of this.executions.values()) ex.abort("worker killed");
    this.current?.abort.abort();
    await this.loop?.catch(() => {});
  }

  private async run(onRegistered: () => void, onRefused: (e: Error) => void): Promise<void> {
    let attempt = 0;
    const client = createClient(
      WorkerService,
      // No compression: a worker sits next to its executor, and gzip of every
      // large StartRun costs both sides more CPU than it saves on the wire.
      createGrpcTransport({
        baseUrl: this.url,
        pingIntervalMs: 15_000,
        acceptCompression: [],
        ...tlsOptions(this.url, this.options.ca),
        ...apiKeyOptions(this.options.apiKey),
      }),
    );
    while (!this.closed) {
      let registered = false;
      try {
        await this.session(client, () => {
          registered = true;
          attempt = 0;
          onRegistered();
        });
      } catch (err) {
        const e = toStepwiseError(err);
        // A refused registration (or key) will be refused again: report it, stop.
        if (!registered && REFUSED.has(e.code)) {
          this.closed = true;
          onRefused(e);
          return;
        }
        if (!this.closed) this.options.onError?.(e);
      }
      // Whatever this connection held is the executor's to hand on now.
      for (const ex of this.executions.values()) ex.abort("connection to the executor lost");
      this.executions.clear();
      if (this.closed || this.draining) return;
      const delay = Math.min(this.options.maxReconnectDelayMs, 100 * 2 ** attempt++);
      await new Promise((r) => setTimeout(r, delay / 2 + Math.random() * (delay / 2)));
    }
  }

  private async session(
    client: ReturnType<typeof createClient<typeof WorkerService>>,
    onRegistered: () => void,
  ): Promise<void> {
    const outbox = pushable<ConnectRequest>({ objectMode: true });
    const abort = new AbortController();
    // Once the executor agrees, the messages of one turn of the event loop
    // (the results of many runs) go out as one stream message.
    let batching = false;
    let ended = false;
    const unsent = new TurnBatch<ConnectRequest>((messages) => {
      if (ended) return;
      outbox.push(
        messages.length === 1
          ? messages[0]!
          : create(ConnectRequestSchema, { message: { case: "batch", value: create(RequestBatchSchema, { messages }) } }),
      );
    });
    const send = (m: ConnectRequest) => {
      if (ended) return;
      if (!batching) {
        outbox.push(m);
        return;
      }
      unsent.add(m);
    };
    const end = () => {
      unsent.flushNow();
      ended = true;
      outbox.end();
    };
    this.current = { send, end, abort };
    outbox.push(this.registerMessage());
    let heartbeat: NodeJS.Timeout | undefined;
    let lastHeard = Date.now();
    try {
      for await (const res of client.connect(requestStream(outbox), { signal: abort.signal })) {
        lastHeard = Date.now();
        const m = res.message;
        if (m.case === "registered") {
          batching = m.value.batches;
          const every = m.value.heartbeatIntervalMs || 5_000;
          heartbeat = setInterval(() => {
            if (Date.now() - lastHeard > every * 3) {
              abort.abort(new Error("the executor stopped answering heartbeats"));
              return;
            }
            send(
              create(ConnectRequestSchema, {
                message: { case: "heartbeat", value: create(HeartbeatSchema, { sentAtMs: BigInt(Date.now()) }) },
              }),
            );
          }, every);
          onRegistered();
        } else if (m.case === "batch") {
          for (const inner of m.value.messages) this.onMessage(inner, send);
        } else {
          this.onMessage(res, send);
        }
      }
    } finally {
      clearInterval(heartbeat);
      end();
      this.current = undefined;
    }
  }

  private onMessage(res: ConnectResponse, send: (m: ConnectRequest) => void): void {
    const m = res.message;
    switch (m.case) {
      case "startRun": {
        const start = m.value;
        const fn = this.fns.get(start.functionId);
        if (!fn) return;
        // A newer lease of a run this worker still executes supersedes the
        // old execution, whose results the executor would refuse anyway.
        this.executions.get(start.runId)?.abort("superseded by a newer execution of the run");
        const ex = new RunExecution(start, fn, send);
        this.executions.set(start.runId, ex);
        const p = ex
          .execute()
          .catch((err: unknown) => this.options.onError?.(err instanceof Error ? err : new Error(String(err))))
          .finally(() => {
            if (this.executions.get(start.runId) === ex) this.executions.delete(start.runId);
            this.running.delete(p);
          });
        this.running.add(p);
        return;
      }
      case "stepAck": {
        const ex = this.executions.get(m.value.runId);
        if (ex?.lease === m.value.lease) ex.onAck(m.value);
        return;
      }
      case "cancelRun": {
        // Only the execution the cancel names: a newer one of the run keeps going.
        const ex = this.executions.get(m.value.runId);
        if (ex?.lease !== m.value.lease) return;
        ex.abort(m.value.reason || "cancelled");
        this.executions.delete(m.value.runId);
        return;
      }
      case "drain":
        // The executor is going away; once it closes the stream we reconnect.
        return;
      default:
        return;
    }
  }

  private registerMessage(): ConnectRequest {
    return create(ConnectRequestSchema, {
      message: {
        case: "register",
        value: create(RegisterSchema, {
          appId: this.appId,
          workerId: `${this.appId}-${randomUUID()}`,
          capacity: this.options.capacity,
          sdk: SDK,
          batches: true,
          functions: [...this.fns.values()].map(functionConfigMessage),
        }),
      },
    });
  }
}

/**
 * Wraps the outbox in an async generator: Connect calls return() on the
 * request iterable when a call ends and expects the promise a generator gives.
 */
