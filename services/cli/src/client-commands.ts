import { readFileSync } from "node:fs";
import { create, type DescMessage, type JsonObject, type MessageShape, toJson } from "@bufbuild/protobuf";
import { timestampDate, ValueSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import {
  CancelRunResponseSchema,
  CancelRunsResponseSchema,
  EventSchema,
  GetRunResponseSchema,
  IngestService,
  ListFunctionsResponseSchema,
  ListRunsResponseSchema,
  ReplayRunResponseSchema,
  RerunRunResponseSchema,
  RerunRunsResponseSchema,
  RunService,
  RUN_STATUSES,
  runStatusFromProto,
  runStatusToProto,
  SendResponseSchema,
  type Run,
  type RunStatusName,
} from "@stepwise/proto";
import { parseArgs } from "node:util";

// The operator's commands: they drive a running engine over the same public
// RPCs as curl and the SDK (RunService, IngestService), on --url.

/** A command line the commands refuse, with the usage to show. */
export class UsageError extends Error {
  constructor(
    message: string,
    readonly usage: string,
  ) {
    super(message);
  }
}

export const RUNS_USAGE = `Usage:
  stepwise runs list [--app A] [--function F] [--status S] [--limit N]
      The newest runs (S: queued, running, waiting, completed, failed, cancelled).
  stepwise runs get RUN
      One run and its step timeline: step, attempt, duration, status, output or error.
  stepwise runs cancel RUN [--reason R]
  stepwise runs cancel --app A --function F [--status S ...] [--if CEL] [--reason R]
      Cancels one run, or every run of a function the filter selects.
  stepwise runs rerun RUN [--from-step STEP]
  stepwise runs rerun --app A --function F [--status S ...] [--if CEL] [--from-step STEP]
      A new run with the same event: from the start, or replayed from a step key (such as ship:0);
      for one run, or for every ended run of a function the filter selects (failed ones by default).
Every command takes --url (default $STEPWISE_URL or http://127.0.0.1:8288) and --json.
An engine with keys needs STEPWISE_API_KEY.`;

export const SEND_USAGE = `Usage:
  stepwise send NAME [--data JSON] [--id ID]
      Sends one event and prints its id. --data is a JSON object; --id makes a repeated send a no-op.
Also takes --url (default $STEPWISE_URL or http://127.0.0.1:8288) and --json.
An engine with keys needs STEPWISE_API_KEY.`;

export const FUNCTIONS_USAGE = `Usage:
  stepwise functions list [--app A]
      The registered functions with their triggers.
Also takes --url (default $STEPWISE_URL or http://127.0.0.1:8288) and --json.
An engine with keys needs STEPWISE_API_KEY.`;

const COMMON = {
  url: { type: "string" },
  json: { type: "boolean", default: false },
  help: { type: "boolean", short: "h", default: false },
} as const;

const RUNS_OPTIONS = {
  ...COMMON,
  app: { type: "string" },
  function: { type: "string" },
  status: { type: "string", multiple: true },
  limit: { type: "string" },
  if: { type: "string" },
  reason: { type: "string" },
  "from-step": { type: "string" },
} as const;

interface Clients {
  runs: Client<typeof RunService>;
  ingest: Client<typeof IngestService>;
}

function clients(url: string | undefined): Clients {
  const baseUrl = url ?? process.env["STEPWISE_URL"] ?? "http://127.0.0.1:8288";
  // An engine serving TLS with a private CA's certificate: STEPWISE_CA_FILE names the CA to trust.
  const caFile = process.env["STEPWISE_CA_FILE"];
  // An engine that authenticates: STEPWISE_API_KEY is sent as a bearer token (a read key lists, an admin key controls runs, an event key sends).
  const apiKey = process.env["STEPWISE_API_KEY"];
  const transport = createConnectTransport({
    baseUrl,
    httpVersion: "1.1",
    ...(apiKey ? { interceptors: [bearer(apiKey)] } : {}),
    ...(baseUrl.startsWith("https:") && caFile ? { nodeOptions: { ca: readFileSync(caFile) } } : {}),
  });
  return { runs: createClient(RunService, transport), ingest: createClient(IngestService, transport) };
}

/** Sends the key on every call. */
function bearer(key: string): Interceptor {
  return (next) => (req) => {
    req.header.set("authorization", `Bearer ${key}`);
    return next(req);
  };
}

/** Runs `stepwise runs ...`; writes to out, returns the exit code. */
export async function runsCommand(args: string[], out: (s: string) => void): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === undefined || sub === "--help" || sub === "-h" || sub === "help") {
    out(`${RUNS_USAGE}\n`);
    return 0;
  }
  let parsed;
  try {
    parsed = parseArgs({ args: rest, options: RUNS_OPTIONS, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError(err instanceof Error ? err.message : String(err), RUNS_USAGE);
  }
  const { values, positionals } = parsed;
  if (values.help) return usage(out, RUNS_USAGE);
  switch (sub) {
    case "list": {
      noPositionals(positionals, RUNS_USAGE);
      if ((values.status?.length ?? 0) > 1) throw new UsageError("--status: one status for list", RUNS_USAGE);
      const limit = Number(values.limit ?? "20");
      if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw new UsageError("--limit: a number from 1 to 1000", RUNS_USAGE);
      const res = await clients(values.url).runs.listRuns({
        appId: str(values.app),
        functionId: str(values.function),
        status: values.status?.[0] === undefined ? 0 : runStatusToProto(statusName(values.status[0])),
        pageSize: limit,
      });
      if (values.json) return json(out, ListRunsResponseSchema, res);
      out(
        table(
          ["RUN", "STATUS", "FUNCTION", "APP", "EVENT", "CREATED", "DURATION"],
          res.runs.map((r) => [r.id, status(r), r.functionId, r.appId, r.event?.name ?? "", time(r.createdAt), runDuration(r)]),
        ),
      );
      return 0;
    }
    case "get": {
      const runId = onePositional(positionals, "RUN", RUNS_USAGE);
      const res = await clients(values.url).runs.getRun({ runId });
      if (values.json) return json(out, GetRunResponseSchema, res);
      const r = res.run!;
      out(`run       ${r.id}\nfunction  ${r.appId}/${r.functionId}\nstatus    ${status(r)}\nevent     ${r.event?.name ?? ""} ${r.event?.id ?? ""}\n`);
      out(`created   ${time(r.createdAt)}\nended     ${time(r.endedAt)}\nduration  ${runDuration(r)}\n`);
      if (r.originRunId) out(`from      ${r.originRunId}${r.originStepKey ? ` (replayed from ${r.originStepKey})` : " (rerun)"}\n`);
      if (r.derivedRunIds.length > 0) out(`reruns    ${r.derivedRunIds.join(", ")}\n`);
      if (r.output) out(`output    ${JSON.stringify(toJson(ValueSchema, r.output))}\n`);
      if (r.error) out(`error     ${r.error.name}: ${r.error.message}\n`);
      const rows = [
        ...r.failedAttempts.map((a) => ({ at: a.endedAt, row: [a.stepKey || "(handler)", String(a.attempt), span(a.startedAt, a.endedAt), "retried", errorText(a.error)] })),
        ...r.steps.map((s) => ({
          at: s.endedAt,
          row: [s.key, String(s.attempt), span(s.startedAt, s.endedAt), s.error ? "failed" : "ok", s.error ? errorText(s.error) : clip(JSON.stringify(s.output ? toJson(ValueSchema, s.output) : null))],
        })),
      ].sort((a, b) => ms(a.at) - ms(b.at));
      out(`\n${table(["STEP", "ATTEMPT", "DURATION", "STATUS", "OUTPUT OR ERROR"], rows.map((x) => x.row))}`);
      return 0;
    }
    case "cancel": {
      const c = clients(values.url).runs;
      if (positionals.length > 0) {
        const runId = onePositional(positionals, "RUN", RUNS_USAGE);
        if (values.function !== undefined || values.app !== undefined) throw new UsageError("give a RUN or --app and --function, not both", RUNS_USAGE);
        const res = await c.cancelRun({ runId, reason: str(values.reason) });
        if (values.json) return json(out, CancelRunResponseSchema, res);
        out(`cancelled ${runId}\n`);
        return 0;
      }
      if (values.app === undefined || values.function === undefined) throw new UsageError("give a RUN, or --app and --function", RUNS_USAGE);
      const statuses = (values.status ?? []).map((s) => runStatusToProto(statusName(s)));
      const res = await c.cancelRuns({
        appId: String(values.app),
        functionId: String(values.function),
        statuses,
        condition: str(values.if),
        reason: str(values.reason),
      });
      if (values.json) return json(out, CancelRunsResponseSchema, res);
      out(`cancelled ${res.cancelled} run${res.cancelled === 1 ? "" : "s"}\n`);
      return 0;
    }
    case "rerun": {
      const c = clients(values.url).runs;
      const fromStep = values["from-step"];
      if (positionals.length === 0) {
        if (values.app === undefined || values.function === undefined) throw new UsageError("give a RUN, or --app and --function", RUNS_USAGE);
        const res = await c.rerunRuns({
          appId: String(values.app),
          functionId: String(values.function),
          statuses: (values.status ?? []).map((s) => runStatusToProto(statusName(s))),
          condition: str(values.if),
          fromStep: str(fromStep),
        });
        if (values.json) return json(out, RerunRunsResponseSchema, res);
        out(`started ${res.started} run${res.started === 1 ? "" : "s"}${res.skipped ? `, skipped ${res.skipped} without step ${str(fromStep)}` : ""}\n`);
        return 0;
      }
      const runId = onePositional(positionals, "RUN", RUNS_USAGE);
      if (fromStep !== undefined) {
        const res = await c.replayRun({ runId, fromStep: String(fromStep) });
        if (values.json) return json(out, ReplayRunResponseSchema, res);
        out(`replaying ${runId} from ${String(fromStep)} as ${res.run!.id}\n`);
        return 0;
      }
      const res = await c.rerunRun({ runId });
      if (values.json) return json(out, RerunRunResponseSchema, res);
      out(`rerunning ${runId} as ${res.run!.id}\n`);
      return 0;
    }
    default:
      throw new UsageError(`unknown command "runs ${sub}"`, RUNS_USAGE);
  }
}

/** Runs `stepwise send NAME ...`. */
export async function sendCommand(args: string[], out: (s: string) => void): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args, options: { ...COMMON, data: { type: "string", default: "{}" }, id: { type: "string", default: "" } }, allowPositionals: true });
  } catch (err) {
    throw new UsageError(err instanceof Error ? err.message : String(err), SEND_USAGE);
  }
  const { values, positionals } = parsed;
  if (values.help) return usage(out, SEND_USAGE);
  const name = onePositional(positionals, "NAME", SEND_USAGE);
  let data: unknown;
  try {
    data = JSON.parse(String(values.data));
  } catch {
    throw new UsageError("--data: not JSON", SEND_USAGE);
  }
  if (typeof data !== "object" || data === null || Array.isArray(data)) throw new UsageError("--data: must be a JSON object", SEND_USAGE);
  const res = await clients(values.url).ingest.send({
    events: [create(EventSchema, { id: String(values.id), name, data: data as JsonObject })],
  });
  if (values.json) return json(out, SendResponseSchema, res);
  out(`${res.ids[0] ?? ""}\n`);
  return 0;
}

/** Runs `stepwise functions list ...`. */
export async function functionsCommand(args: string[], out: (s: string) => void): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === undefined || sub === "--help" || sub === "-h" || sub === "help") return usage(out, FUNCTIONS_USAGE);
  if (sub !== "list") throw new UsageError(`unknown command "functions ${sub}"`, FUNCTIONS_USAGE);
  let parsed;
  try {
    parsed = parseArgs({ args: rest, options: { ...COMMON, app: { type: "string" } } });
  } catch (err) {
    throw new UsageError(err instanceof Error ? err.message : String(err), FUNCTIONS_USAGE);
  }
  const { values } = parsed;
  if (values.help) return usage(out, FUNCTIONS_USAGE);
  const res = await clients(values.url).runs.listFunctions({ appId: str(values.app) });
  if (values.json) return json(out, ListFunctionsResponseSchema, res);
  out(
    table(
      ["APP", "FUNCTION", "TRIGGERS", "RETRIES"],
      res.functions.map((f) => {
        const config = (f.config ?? {}) as {
          triggers?: Array<{ event?: string; if?: string; cron?: string; timezone?: string }>;
          retries?: number;
        };
        const triggers = (config.triggers ?? []).map((t) => (t.cron ? `cron ${t.cron}${t.timezone ? ` (${t.timezone})` : ""}` : `${t.event ?? ""}${t.if ? ` if ${t.if}` : ""}`));
        return [f.appId, f.functionId, triggers.join("; "), config.retries === undefined ? "default" : String(config.retries)];
      }),
    ),
  );
  return 0;
}

/** The message a failed call exits with: its code and the server's message. */
export function callFailure(err: unknown): string | undefined {
  if (!(err instanceof ConnectError)) return undefined;
  return `${Code[err.code]?.replace(/[A-Z]/g, (c, i: number) => (i ? "_" : "") + c.toLowerCase()) ?? "unknown"}: ${err.rawMessage}`;
}

function usage(out: (s: string) => void, text: string): number {
  out(`${text}\n`);
  return 0;
}

function json<Desc extends DescMessage>(out: (s: string) => void, schema: Desc, message: MessageShape<Desc>): number {
  out(`${JSON.stringify(toJson(schema, message), null, 2)}\n`);
  return 0;
}

function str(v: unknown): string {
  return v === undefined ? "" : String(v);
}

function noPositionals(positionals: string[], text: string): void {
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`, text);
}

function onePositional(positionals: string[], what: string, text: string): string {
  if (positionals.length !== 1) throw new UsageError(`expected one ${what}`, text);
  return positionals[0]!;
}

function statusName(s: string): RunStatusName {
  const name = s.toUpperCase();
  if (!(RUN_STATUSES as readonly string[]).includes(name)) {
    throw new UsageError(`--status: unknown status ${JSON.stringify(s)}`, RUNS_USAGE);
  }
  return name as RunStatusName;
}

function status(r: Run): string {
  return runStatusFromProto(r.status) ?? "UNKNOWN";
}

type Timestamp = Parameters<typeof timestampDate>[0];

function ms(t: Timestamp | undefined): number {
  return t ? timestampDate(t).getTime() : 0;
}

function time(t: Timestamp | undefined): string {
  return t ? timestampDate(t).toISOString() : "-";
}

function span(from: Timestamp | undefined, to: Timestamp | undefined): string {
  if (!from || !to) return "-";
  const d = ms(to) - ms(from);
  return d < 1000 ? `${d} ms` : `${(d / 1000).toFixed(1)} s`;
}

function runDuration(r: Run): string {
  return span(r.startedAt ?? r.createdAt, r.endedAt);
}

function errorText(e: { name: string; message: string } | undefined): string {
  return e ? clip(`${e.name}: ${e.message}`) : "";
}

function clip(s: string, max = 60): string {
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

/** Columns padded to their widest cell. */
function table(head: string[], rows: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join("  ").trimEnd();
  return `${[line(head), ...rows.map(line)].join("\n")}\n`;
}
