import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { createClient, type Client, type Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { tlsOptions } from "./tls.js";
import {
  EventSchema,
  ID_PATTERN,
  IngestService,
  MAX_EVENT_ID_LENGTH,
  MAX_ID_LENGTH,
  MAX_WAIT_MS,
  RunService,
  runStatusToProto,
  type Run,
} from "@stepwise/proto";
import { EventSender } from "./event-sender.js";
import { defineFunction } from "./function-definition.js";
import { type RunInfo, type RunStatus, toRunInfo } from "./run-info.js";
import { RunWatcher } from "./run-watcher.js";
import { apiKeyOptions } from "./api-key.js";
import { callEngine, StepwiseError } from "./stepwise-error.js";
import type { Jsonified } from "./step-tools.js";
import type {
  CronTrigger,
  EventData,
  EventSchemas,
  EventTrigger,
  FailureContext,
  FunctionConfig,
  Handler,
  ReceivedEvent,
  StepwiseFunction,
} from "./function.js";

/** Options of a Stepwise client. */
export interface StepwiseOptions<S extends EventSchemas> {
  /** Id of the app: the functions this client defines belong to it. */
  appId: string;
  /** URL of the ingest service (or of `stepwise dev`), such as http://127.0.0.1:8288; https:// for TLS. */
  url?: string;
  /** For an https:// URL: a CA certificate (PEM) to trust besides the system's; STEPWISE_CA_FILE names one too. */
  ca?: string | Buffer;
  /**
   * API key sent on every call (default STEPWISE_API_KEY): an event key to
   * send, a read key to read runs, an admin key to cancel or rerun them.
   * Its environment is where the events go and whose runs are read.
   */
  apiKey?: string;
  /** zod schemas of event data by event name; they type and validate events. */
  schemas?: S;
}

/** An event to send. */
export interface OutgoingEvent<N extends string = string, D = Record<string, unknown>> {
  /** Unique id; sending an id again is a no-op. Assigned by the engine when omitted. */
  id?: string;
  name: N;
  data: D;
  /** When it happened; now when omitted. */
  ts?: Date;
}


/**
 * Which runs of a function cancelRuns or rerunRuns takes: by status, by
 * when they were created, and by a CEL condition over their event.
 */
export interface RunSelection<S extends RunStatus> {
  functionId: string;
  /** The app of the function; this client's app when unset. */
  appId?: string;
  /** Only runs in these statuses; see each call for the default. */
  statuses?: readonly S[];
  /** Only runs created at or after this time. */
  createdAfter?: Date;
  /** Only runs created before this time. */
  createdBefore?: Date;
  /** A CEL expression over the run's event (`event.data...`); numbers are doubles: `int(event.data.n)`. */
  if?: string;
}

/** How long a WaitForRuns waits when the caller gives no timeout, in ms. */
const DEFAULT_WAIT_MS = 30_000;

/**
 * The entry point of the SDK: defines an app's functions and sends events.
 *
 * @example
 * ```ts
 * const stepwise = new Stepwise({
 *   appId: "shop",
 *   url: "http://127.0.0.1:8288",
 *   schemas: { "order.placed": z.object({ orderId: z.string() }) },
 * });
 * const fn = stepwise.createFunction(
 *   { id: "order-processing", triggers: [{ event: "order.placed" }] },
 *   async ({ event, step }) => step.run("charge", () => charge(event.data.orderId)),
 * );
 * await stepwise.send({ name: "order.placed", data: { orderId: "o-1" } });
 * ```
 */
export class Stepwise<S extends EventSchemas = EventSchemas> {
  readonly appId: string;
  private readonly schemas: S;
  private readonly url: string;
  private readonly ca: string | Buffer | undefined;
  private readonly apiKey: string | undefined;
  private transport: Transport | undefined;
  private ingest: Client<typeof IngestService> | undefined;
  private runs: Client<typeof RunService> | undefined;
  private watcher: RunWatcher | undefined;
  private sender: EventSender | undefined;

  constructor(options: StepwiseOptions<S>) {
    if (!ID_PATTERN.test(options.appId)) {
      throw new TypeError(`appId ${JSON.stringify(options.appId)} must be 1-${MAX_ID_LENGTH} letters, digits, "-" or "_"`);
    }
    this.appId = options.appId;
    this.schemas = options.schemas ?? ({} as S);
    this.url = options.url ?? process.env["STEPWISE_URL"] ?? "http://127.0.0.1:8288";
    this.ca = options.ca;
    this.apiKey = options.apiKey;
  }

  /**
   * Defines a function. Its handler receives the triggering event, typed
   * by the schema of the trigger's event name, and the step tools. With
   * `onFailure`, each run that ends FAILED starts a durable run of that
   * handler with the failed run's event and error.
   *
   * Throws a TypeError naming the function and the field for a config that
   * cannot work (a bad id, no trigger, retries out of range, a duration
   * that does not parse). CEL conditions and cron schedules are checked by
   * the executor when the worker registers.
   */
  createFunction<N extends Extract<keyof S, string> | (string & {}), R>(
    config: FunctionConfig<N> & {
      triggers: readonly (EventTrigger<N> | CronTrigger)[];
      onFailure?: (ctx: FailureContext<ReceivedEvent<N, EventData<S, N>>>) => unknown;
    },
    handler: Handler<ReceivedEvent<N, EventData<S, N>>, R>,
  ): StepwiseFunction<Jsonified<Awaited<R>>> {
    // The output type only exists for step.invoke; at run time it is unknown.
    return defineFunction(config as never, handler as never, {
      appId: this.appId,
      schemas: this.schemas,
      send: (events) => this.send(events as never) as Promise<string[]>,
    }) as StepwiseFunction<Jsonified<Awaited<R>>>;
  }

  /**
   * Sends events; resolves with their ids once the engine stored them
   * durably. Data is validated against its schema first: data that does not
   * match rejects with the schema's ZodError, and nothing is sent. A call
   * the engine refuses or that fails on the way rejects with a
   * StepwiseError, and is not sent again: sending the same events again
   * with the same ids stores each once.
   *
   * @example
   * ```ts
   * const [id] = await stepwise.send({ id: `order-${order.id}`, name: "order.placed", data: { orderId: order.id } });
   * ```
   */
  async send<N extends Extract<keyof S, string> | (string & {})>(
    events: OutgoingEvent<N, EventData<S, N>> | readonly OutgoingEvent<N, EventData<S, N>>[],
  ): Promise<string[]> {
    const list = (Array.isArray(events) ? events : [events]) as readonly OutgoingEvent[];
    const messages = list.map((e) => {
      const schema = this.schemas[e.name];
      const data = schema ? (schema.parse(e.data) as Record<string, unknown>) : e.data;
      return create(EventSchema, {
        id: e.id ?? "",
        name: e.name,
        data: data as never,
        ...(e.ts ? { ts: timestampFromDate(e.ts) } : {}),
      });
    });
    // Every send of this client shares one IngestService.SendStream.
    this.sender ??= new EventSender(this.ingestClient());
    return this.sender.send(messages);
  }

  /**
   * Ends the client's streams (the one its sends share, the one its
   * waitForRuns share) as soon as what is in progress on them is answered,
   * instead of 250 ms after, so that a script that is done exits at once.
   * The client stays usable: a later call opens a stream again.
   *
   * @example
   * ```ts
   * await stepwise.send({ name: "report.requested", data: {} });
   * stepwise.close();
   * ```
   */
  close(): void {
    this.sender?.close();
    this.watcher?.close();
  }

  /**
   * Reads a run with its journaled steps. Rejects with a StepwiseError,
   * code "not_found" for a run the engine does not know.
   *
   * @example
   * ```ts
   * const run = await stepwise.getRun(runId);
   * if (run.status === "FAILED") console.error(run.error?.message);
   * ```
   */
  async getRun(runId: string): Promise<RunInfo> {
    return runOf("GetRun", await callEngine(() => this.runClient().getRun({ runId })));
  }

  /**
   * Cancels a run: it ends CANCELLED with `reason` as its error message.
   * A queued or waiting run ends at once; a running one too, and its
   * worker stops it at the handler's next await (step bodies see their
   * `signal` abort). The engine then emits a "stepwise/run.cancelled" event
   * that functions can trigger on. Resolves with the run as the cancel left
   * it. Rejects with a StepwiseError: "not_found" for an unknown run,
   * "failed_precondition" for a run that had already ended.
   *
   * @example
   * ```ts
   * await stepwise.cancelRun(runId, { reason: "the customer cancelled the order" });
   * ```
   */
  async cancelRun(runId: string, options: { reason?: string } = {}): Promise<RunInfo> {
    return runOf("CancelRun", await callEngine(() => this.runClient().cancelRun({ runId, reason: options.reason ?? "" })));
  }

  /**
   * Cancels, as cancelRun does each, every run of a function that has not
   * ended and matches the filter: by status, by when it was created, and by
   * a CEL `if` over its event. Resolves with how many runs it cancelled.
   * Rejects with a StepwiseError, "invalid_argument" for a bad filter or a
   * condition that does not compile.
   *
   * @example
   * ```ts
   * const n = await stepwise.cancelRuns({
   *   functionId: "order-processing",
   *   statuses: ["WAITING"],
   *   if: "event.data.customerId == 'c-42'",
   *   reason: "the customer left",
   * });
   * ```
   */
  async cancelRuns(filter: RunSelection<"QUEUED" | "RUNNING" | "WAITING"> & { reason?: string }): Promise<number> {
    const res = await callEngine(() => this.runClient().cancelRuns({ ...this.selection(filter), reason: filter.reason ?? "" }));
    return res.cancelled;
  }

  /**
   * Starts a new run of a run's function with the same event, from its
   * first step: after a fix, say. The new run records where it came from
   * (`originRunId`), and getRun of the old one lists it in
   * `derivedRunIds`. Rejects with a StepwiseError, "not_found" for an
   * unknown run.
   *
   * @example
   * ```ts
   * const again = await stepwise.rerunRun(failedRunId);
   * ```
   */
  async rerunRun(runId: string): Promise<RunInfo> {
    return runOf("RerunRun", await callEngine(() => this.runClient().rerunRun({ runId })));
  }

  /**
   * Starts a new run of a run that ended, whose journal holds a copy of the
   * steps journaled before `fromStep` (a step key such as "charge:0"): those
   * return their recorded results without running again, and the new run
   * executes from `fromStep` on. Rejects with a StepwiseError, "not_found"
   * for an unknown run, "failed_precondition" for a run that has not ended
   * or has no such step.
   *
   * @example
   * ```ts
   * // Step 3 had a bug: fixed and deployed, replay from it.
   * const replay = await stepwise.replayRun(failedRunId, "ship:0");
   * ```
   */
  async replayRun(runId: string, fromStep: string): Promise<RunInfo> {
    return runOf("ReplayRun", await callEngine(() => this.runClient().replayRun({ runId, fromStep })));
  }

  /**
   * Reruns (or, with `fromStep`, replays) every ended run of a function that
   * the filter selects: FAILED runs unless `statuses` says otherwise. A
   * replay skips the runs that never journaled `fromStep`. Resolves with
   * how many new runs started and how many were skipped.
   *
   * @example
   * ```ts
   * // After fixing step "ship", replay every failed run from it.
   * const { started } = await stepwise.rerunRuns({ functionId: "order-processing", fromStep: "ship:0" });
   * ```
   */
  async rerunRuns(
    filter: RunSelection<"COMPLETED" | "FAILED" | "CANCELLED"> & {
      /** Replay each run from this step key instead of rerunning it from the start. */
      fromStep?: string;
    },
  ): Promise<{ started: number; skipped: number }> {
    const res = await callEngine(() => this.runClient().rerunRuns({ ...this.selection(filter), fromStep: filter.fromStep ?? "" }));
    return { started: res.started, skipped: res.skipped };
  }

  /** The fields of a bulk request that select its runs. */
  private selection(filter: RunSelection<RunStatus>) {
    return {
      appId: filter.appId ?? this.appId,
      functionId: filter.functionId,
      statuses: (filter.statuses ?? []).map((s) => runStatusToProto(s)),
      ...(filter.createdAfter ? { createdAfter: timestampFromDate(filter.createdAfter) } : {}),
      ...(filter.createdBefore ? { createdBefore: timestampFromDate(filter.createdBefore) } : {}),
      condition: filter.if ?? "",
    };
  }

  /**
   * Waits until every run an event started has ended, and returns them
   * (without steps). The engine answers as soon as the last one ends, with
   * no polling; at the timeout (default 30 s, at most 300 s) it answers with
   * the runs as they are and `done` false. All the waits of one client
   * share one RunService.WatchRuns stream, so waiting for thousands of runs
   * at once costs one message per batch of them, not a call each.
   *
   * Rejects with a StepwiseError when the engine refuses the arguments
   * (code "invalid_argument": an empty event id, a timeout over 300 s), or
   * when at the timeout it cannot be reached to read the runs as they are.
   * A stream that fails meanwhile is opened again on its own and does not
   * fail the wait.
   *
   * @example
   * ```ts
   * const [id] = await stepwise.send({ name: "order.placed", data });
   * const { runs, done } = await stepwise.waitForRuns(id!, { timeoutMs: 10_000 });
   * ```
   */
  async waitForRuns(eventId: string, options: { timeoutMs?: number } = {}): Promise<{ runs: RunInfo[]; done: boolean }> {
    const timeoutMs = options.timeoutMs ?? 0;
    if (eventId.length > 0 && eventId.length <= MAX_EVENT_ID_LENGTH && timeoutMs >= 0 && timeoutMs <= MAX_WAIT_MS) {
      // Every wait of this client shares one WatchRuns stream.
      this.watcher ??= new RunWatcher(this.runClient());
      const outcome = await this.watcher.wait(eventId, timeoutMs || DEFAULT_WAIT_MS);
      if (Array.isArray(outcome)) return { runs: outcome.map(toRunInfo), done: true };
      if (outcome === "timeout") {
        // The runs as they are now: a one-look WaitForRuns.
        const res = await callEngine(() => this.runClient().waitForRuns({ eventId, timeoutMs: 1 }));
        return { runs: res.runs.map(toRunInfo), done: res.done };
      }
    }
    // Arguments the server refuses (it says why), or an ingest without
    // WatchRuns. No call deadline: the server answers at the timeout itself.
    const res = await callEngine(() => this.runClient().waitForRuns({ eventId, timeoutMs }));
    return { runs: res.runs.map(toRunInfo), done: res.done };
  }

  /**
   * Lists the runs an event triggered, newest first, without their steps.
   * Rejects with a StepwiseError when the call fails.
   */
  async listRunsOfEvent(eventId: string): Promise<RunInfo[]> {
    const res = await callEngine(() => this.runClient().listRuns({ eventId, pageSize: 100 }));
    return res.runs.map(toRunInfo);
  }

  private connectTransport(): Transport {
    // No compression: ingest would gzip every large answer (WatchRuns
    // batches), which costs both sides more CPU than it saves on a LAN.
    this.transport ??= createGrpcTransport({
      baseUrl: this.url,
      acceptCompression: [],
      ...tlsOptions(this.url, this.ca),
      ...apiKeyOptions(this.apiKey),
    });
    return this.transport;
  }

  private ingestClient() {
    this.ingest ??= createClient(IngestService, this.connectTransport());
    return this.ingest;
  }

  private runClient() {
    this.runs ??= createClient(RunService, this.connectTransport());
    return this.runs;
  }
}

/** The run of a RunService answer; a StepwiseError "internal" for an answer without one. */
function runOf(rpc: string, res: { run?: Run | undefined }): RunInfo {
  if (!res.run) throw new StepwiseError(`${rpc} returned no run`, "internal");
  return toRunInfo(res.run);
}
