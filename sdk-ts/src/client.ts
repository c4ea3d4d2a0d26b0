import { create, toJson } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate, ValueSchema } from "@bufbuild/protobuf/wkt";
import { createClient, type Client, type Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { EventSchema, IngestService, RunService, RunStatus, type ErrorDetail, type Run } from "@stepwise/proto";
import { NonRetriableError, type SerializedError } from "./errors.js";
import type {
  EventData,
  EventSchemas,
  EventTrigger,
  FunctionConfig,
  Handler,
  ReceivedEvent,
  StepwiseFunction,
} from "./function.js";
import { fromErrorDetail } from "./wire.js";

/** Options of a Stepwise client. */
export interface StepwiseOptions<S extends EventSchemas> {
  /** Id of the app: the functions this client defines belong to it. */
  appId: string;
  /** URL of the ingest service (or of `stepwise dev`), such as http://127.0.0.1:8288. */
  url?: string;
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

/** The status of a run. */
export type RunState = "QUEUED" | "RUNNING" | "COMPLETED" | "FAILED" | "CANCELLED";

/** A journaled step as GetRun returns it. */
export interface StepInfo {
  key: string;
  id: string;
  attempt: number;
  startedAt: Date | undefined;
  endedAt: Date | undefined;
  output: unknown;
  error: SerializedError | undefined;
}

/** A run as GetRun returns it. */
export interface RunInfo {
  id: string;
  appId: string;
  functionId: string;
  status: RunState;
  event: { id: string; name: string; data: unknown };
  createdAt: Date | undefined;
  startedAt: Date | undefined;
  endedAt: Date | undefined;
  output: unknown;
  error: SerializedError | undefined;
  attempts: number;
  steps: StepInfo[];
}

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
  private transport: Transport | undefined;
  private ingest: Client<typeof IngestService> | undefined;
  private runs: Client<typeof RunService> | undefined;

  constructor(options: StepwiseOptions<S>) {
    if (!/^[A-Za-z0-9_-]{1,128}$/.test(options.appId)) {
      throw new TypeError(`appId ${JSON.stringify(options.appId)} must be 1-128 letters, digits, "-" or "_"`);
    }
    this.appId = options.appId;
    this.schemas = options.schemas ?? ({} as S);
    this.url = options.url ?? process.env["STEPWISE_URL"] ?? "http://127.0.0.1:8288";
  }

  /**
   * Defines a function. Its handler receives the triggering event, typed
   * by the schema of the trigger's event name, and the step tools.
   */
  createFunction<N extends Extract<keyof S, string> | (string & {}), R>(
    config: FunctionConfig<N> & { triggers: readonly EventTrigger<N>[] },
    handler: Handler<ReceivedEvent<N, EventData<S, N>>, R>,
  ): StepwiseFunction {
    if (!/^[A-Za-z0-9_-]{1,128}$/.test(config.id)) {
      throw new TypeError(`function id ${JSON.stringify(config.id)} must be 1-128 letters, digits, "-" or "_"`);
    }
    if (config.triggers.length === 0) throw new TypeError(`function ${config.id}: at least one trigger is required`);
    const schemas = this.schemas;
    return {
      appId: this.appId,
      config: config as FunctionConfig,
      handler: handler as unknown as Handler<ReceivedEvent, unknown>,
      parseEvent(event) {
        const schema = schemas[event.name];
        if (!schema) return event;
        const parsed = schema.safeParse(event.data);
        if (!parsed.success) {
          throw new NonRetriableError(
            `event ${event.id} (${event.name}) does not match its schema: ${parsed.error.issues.map((i) => `${i.path.join(".") || "data"}: ${i.message}`).join("; ")}`,
          );
        }
        return { ...event, data: parsed.data as Record<string, unknown> };
      },
    };
  }

  /**
   * Sends events; resolves with their ids once the engine stored them
   * durably. Data is validated against its schema first.
   */
  async send<N extends Extract<keyof S, string> | (string & {})>(
    events: OutgoingEvent<N, EventData<S, N>> | readonly OutgoingEvent<N, EventData<S, N>>[],
  ): Promise<string[]> {
    const list = (Array.isArray(events) ? events : [events]) as readonly OutgoingEvent[];
    const res = await this.ingestClient().send({
      events: list.map((e) => {
        const schema = this.schemas[e.name];
        const data = schema ? (schema.parse(e.data) as Record<string, unknown>) : e.data;
        return create(EventSchema, {
          id: e.id ?? "",
          name: e.name,
          data: data as never,
          ...(e.ts ? { ts: timestampFromDate(e.ts) } : {}),
        });
      }),
    });
    return res.ids;
  }

  /** Reads a run with its journaled steps. */
  async getRun(runId: string): Promise<RunInfo> {
    const res = await this.runClient().getRun({ runId });
    if (!res.run) throw new Error("GetRun returned no run");
    return toRunInfo(res.run);
  }

  /** Lists the runs an event triggered, newest first. */
  async listRunsOfEvent(eventId: string): Promise<RunInfo[]> {
    const res = await this.runClient().listRuns({ eventId, pageSize: 100 });
    return res.runs.map(toRunInfo);
  }

  private connectTransport(): Transport {
    this.transport ??= createGrpcTransport({ baseUrl: this.url });
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

const STATES: Record<number, RunState> = {
  [RunStatus.QUEUED]: "QUEUED",
  [RunStatus.RUNNING]: "RUNNING",
  [RunStatus.COMPLETED]: "COMPLETED",
  [RunStatus.FAILED]: "FAILED",
  [RunStatus.CANCELLED]: "CANCELLED",
};

function toRunInfo(run: Run): RunInfo {
  const err = (e: ErrorDetail | undefined) => (e ? fromErrorDetail(e) : undefined);
  return {
    id: run.id,
    appId: run.appId,
    functionId: run.functionId,
    status: STATES[run.status] ?? "QUEUED",
    event: { id: run.event?.id ?? "", name: run.event?.name ?? "", data: run.event?.data },
    createdAt: run.createdAt ? timestampDate(run.createdAt) : undefined,
    startedAt: run.startedAt ? timestampDate(run.startedAt) : undefined,
    endedAt: run.endedAt ? timestampDate(run.endedAt) : undefined,
    output: run.output ? toJson(ValueSchema, run.output) : undefined,
    error: err(run.error),
    attempts: run.attempts,
    steps: run.steps.map((s) => ({
      key: s.key,
      id: s.id,
      attempt: s.attempt,
      startedAt: s.startedAt ? timestampDate(s.startedAt) : undefined,
      endedAt: s.endedAt ? timestampDate(s.endedAt) : undefined,
      output: s.output ? toJson(ValueSchema, s.output) : undefined,
      error: err(s.error),
    })),
  };
}
