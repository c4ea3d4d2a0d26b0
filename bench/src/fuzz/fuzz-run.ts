// The fuzz run: generated and mutated inputs to every RPC of the contract in
// each of the four protocols, each answer judged (a code a client's input may
// get, no echo of unbounded input, no SQL, stack or path), then the engine
// judged (still serving, memory back near its baseline, and no event stored
// that no accepted Send asked for).
import { fromBinary, fromJsonString, type DescMessage, type DescService } from "@bufbuild/protobuf";
import { IngestService, RunService, SendResponseSchema, SendStreamResponseSchema, WorkerService } from "@stepwise/proto";
import fc from "fast-check";
import { type Case, caseOf, type InputKind, sentEventNames } from "./fuzz-cases.js";
import { PROTOCOLS, WireClient, type Answer, type Protocol, type WireRequest } from "./wire.js";

export type { InputKind } from "./fuzz-cases.js";

export const SERVICES: readonly DescService[] = [IngestService, RunService, WorkerService];


/** Codes a client's input may get. Anything else (internal, unknown, no answer, a 5xx) is a failure. */
const CLIENT_CODES = new Set([
  "ok", "invalid_argument", "not_found", "already_exists", "failed_precondition", "resource_exhausted", "out_of_range",
  "permission_denied", "unauthenticated", "aborted", "canceled", "http-415", "http-400", "http-413",
  // The deadline the request carried passed (WaitForRuns, WatchRuns).
  "deadline_exceeded",
  // A client that sent a malformed request its server could not frame (gRPC has no better word).
  "unimplemented",
]);

/** A reply leaks when its error message shows the engine's insides. */
const LEAKS: ReadonlyArray<[string, RegExp]> = [
  ["stack frame", /\n\s+at |\bat [\w.<>]+ \(|\.(ts|js|mjs):\d+/],
  ["file path", /\/(work|home|usr|tmp|var|opt|root)\/|node_modules|node:internal/],
  ["SQL", /\b(select|insert|update|delete)\b[^]*\b(from|into|set)\b|syntax error at or near|violates [a-z ]*constraint|relation "|sqlstate|invalid byte sequence|pglite|postgres/i],
];

/** Longest error message an answer may carry: longer means it echoed input. */
export const MAX_ERROR_MESSAGE = 1024;

export interface Failure {
  reason: string;
  method: string;
  protocol: Protocol;
  kind: InputKind;
  code: string;
  message: string;
  input: string;
}

export interface FuzzReport {
  inputs: number;
  byMethod: Record<string, number>;
  byProtocol: Record<string, number>;
  byKind: Record<string, number>;
  byCode: Record<string, number>;
  failures: Failure[];
  /** Failures by reason, counted in full (failures keeps the first few of each). */
  failureCounts: Record<string, number>;
  acceptedEvents: number;
  storedEvents: number;
  unexpectedEvents: string[];
  /** Accepted events not stored 30 s after the flood (the first 20). */
  missingEvents: string[];
  /** Streams the server refused unread (REFUSED_STREAM), sent again. */
  refusedStreams: number;
  /** The heap in use (nodejs_heap_size_used_bytes) before, at its highest between batches, and after; and the RSS. */
  memory: { baselineMiB: number; peakMiB: number; afterMiB: number; rssBaselineMiB: number; rssPeakMiB: number; rssAfterMiB: number };
  healthy: boolean;
  ms: number;
}

export interface FuzzOptions {
  /** The engine's port, with Ingest, Run and Worker services on it (`stepwise dev`), or the ingest's. */
  url: string;
  /** Where WorkerService is, when not at url (the executor of a deployment). */
  workerUrl?: string | undefined;
  inputs: number;
  seed: number;
  concurrency?: number;
  /** Per-request wait for an answer. */
  timeoutMs?: number;
  /**
   * For an engine with keys: an admin key (sent on IngestService and
   * RunService calls) and a worker key of app "fuzz" (on WorkerService).
   * Then some inputs carry a hostile Authorization header instead.
   */
  keys?: { admin: string; worker: string } | undefined;
  log?: (line: string) => void;
}

/** Judges one answer: undefined when it is one a client may get. */
function judge(c: Case, a: Answer): string | undefined {
  if (!CLIENT_CODES.has(a.code)) return `code ${a.code}`;
  if (a.code === "ok") return undefined;
  if (a.message.length > MAX_ERROR_MESSAGE) return `error message over ${MAX_ERROR_MESSAGE} characters`;
  for (const p of c.probes) if (a.text.includes(p)) return "error echoes a long input";
  for (const [what, re] of LEAKS) if (re.test(a.message)) return `error shows a ${what}`;
  return undefined;
}

/** Ids of the events an accepted Send or SendStream stored. */
function acceptedIds(c: Case, a: Answer, body: Buffer | undefined): string[] {
  if (a.code !== "ok" || !body) return [];
  const m = c.method.name;
  if (m !== "Send" && m !== "SendStream") return [];
  const decode = (schema: DescMessage, bytes: Uint8Array, asJson: boolean): unknown =>
    asJson ? fromJsonString(schema, Buffer.from(bytes).toString(), { ignoreUnknownFields: true }) : fromBinary(schema, bytes);
  try {
    const json = c.protocol === "connect-json";
    const framed = c.request.streaming || c.protocol === "grpc" || c.protocol === "grpc-web";
    const messages: Uint8Array[] = [];
    if (!framed) messages.push(body);
    else {
      for (let at = 0; at + 5 <= body.length; ) {
        const flags = body[at]!;
        const len = body.readUInt32BE(at + 1);
        if (flags === 0) messages.push(body.subarray(at + 5, at + 5 + len));
        at += 5 + len;
      }
    }
    const ids: string[] = [];
    for (const bytes of messages) {
      if (m === "Send") ids.push(...(decode(SendResponseSchema, bytes, json) as { ids: string[] }).ids);
      else {
        const res = decode(SendStreamResponseSchema, bytes, json) as { answers: Array<{ outcome: { case?: string; value?: { ids?: string[] } } }> };
        for (const ans of res.answers) if (ans.outcome.case === "sent") ids.push(...(ans.outcome.value?.ids ?? []));
      }
    }
    return ids;
  } catch {
    return [];
  }
}

/** A RunService call in Connect JSON, for the harness's own reads; with the admin key on an engine with keys. */
async function rpcJson<T>(url: string, path: string, body: unknown, adminKey: string | undefined): Promise<T> {
  const headers: Record<string, string> = { "content-type": "application/json", ...(adminKey ? { authorization: `Bearer ${adminKey}` } : {}) };
  const res = await fetch(`${url}${path}`, { method: "POST", headers, body: JSON.stringify(body) });
  if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`);
  return (await res.json()) as T;
}

async function storedEvents(url: string, adminKey: string | undefined): Promise<Array<{ id: string; name: string }>> {
  const ids: Array<{ id: string; name: string }> = [];
  let pageToken = "";
  for (;;) {
    const page = await rpcJson<{ events?: Array<{ event?: { id?: string; name?: string } }>; nextPageToken?: string }>(url, "/stepwise.v1.RunService/ListEvents", { pageSize: 1000, pageToken }, adminKey);
    for (const e of page.events ?? []) if (e.event?.id) ids.push({ id: e.event.id, name: e.event.name ?? "" });
    if (!page.nextPageToken) return ids;
    pageToken = page.nextPageToken;
  }
}

/**
 * The engine's memory from its /metrics, in MiB: the JavaScript heap in use
 * (what a leak in the engine's code grows) and the resident set (which also
 * holds embedded Postgres's WebAssembly memory, which never shrinks).
 */
async function memoryMiB(url: string): Promise<{ heap: number; rss: number }> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const read = (name: string) => {
    const m = new RegExp(`^${name} (\\d+(?:\\.\\d+)?(?:e\\+?\\d+)?)$`, "m").exec(text);
    return m ? Number(m[1]) / 2 ** 20 : NaN;
  };
  return { heap: read("nodejs_heap_size_used_bytes"), rss: read("process_resident_memory_bytes") };
}

async function healthy(url: string): Promise<boolean> {
  try {
    return (await fetch(`${url}/healthz`)).ok;
  } catch {
    return false;
  }
}

const inc = (r: Record<string, number>, k: string) => void (r[k] = (r[k] ?? 0) + 1);

/** How long to wait for an answer: the base, and 10 s more per MiB sent (a 1.1 MB string is parsed, checked and refused). */
function patience(c: Case, base: number): number {
  const bytes = c.request.raw?.length ?? c.request.messages.reduce((n, m) => n + m.length, 0);
  return base + Math.round((bytes / 2 ** 20) * 10_000);
}

/** Runs the fuzz against an engine and reports what it found; it never throws for what the engine answered. */
export async function runFuzz(options: FuzzOptions): Promise<FuzzReport> {
  const t0 = Date.now();
  const log = options.log ?? (() => {});
  const concurrency = options.concurrency ?? 16;
  const timeoutMs = options.timeoutMs ?? 8_000;
  const methods = SERVICES.flatMap((s) => s.methods);
  const arbitrary = fc.constantFrom(...methods).chain((m) => fc.constantFrom(...PROTOCOLS).chain((p) => caseOf(m, p, options.keys)));
  const report: FuzzReport = {
    inputs: 0, byMethod: {}, byProtocol: {}, byKind: {}, byCode: {}, failures: [], failureCounts: {},
    acceptedEvents: 0, storedEvents: 0, unexpectedEvents: [], missingEvents: [], refusedStreams: 0,
    memory: { baselineMiB: 0, peakMiB: 0, afterMiB: 0, rssBaselineMiB: 0, rssPeakMiB: 0, rssAfterMiB: 0 },
    healthy: false, ms: 0,
  };
  const accepted = new Set<string>();
  const partial = new Set<string>();
  const runClient = new WireClient(options.url);
  const workerClient = options.workerUrl ? new WireClient(options.workerUrl) : runClient;
  const client = {
    send: (req: WireRequest) => {
      const worker = req.path.startsWith(`/${WorkerService.typeName}/`);
      // The right key unless the case sends an Authorization of its own.
      const key = options.keys && req.headers?.["authorization"] === undefined ? (worker ? options.keys.worker : options.keys.admin) : undefined;
      const sent = key ? { ...req, headers: { ...req.headers, authorization: `Bearer ${key}` } } : req;
      return (worker ? workerClient : runClient).send(sent);
    },
    get refused() {
      return runClient.refused + (workerClient === runClient ? 0 : workerClient.refused);
    },
    close() {
      runClient.close();
      workerClient.close();
    },
  };
  // Warm the engine (the first requests of each kind load code) before the baseline.
  const warm = fc.sample(arbitrary, { seed: options.seed ^ 0x5eed, numRuns: 200 });
  await Promise.all(
    warm.map(async (c) => {
      const answer = await client.send({ ...c.request, timeoutMs: patience(c, timeoutMs) });
      for (const id of acceptedIds(c, answer, answer.body)) accepted.add(id);
      if (c.method.name === "SendStream" && answer.code !== "ok") for (const n of sentEventNames(c)) partial.add(n);
    }),
  );
  const before = await memoryMiB(options.url);
  report.memory.baselineMiB = before.heap;
  report.memory.rssBaselineMiB = before.rss;

  const batch = 250;
  let lastLog = Date.now();
  for (let done = 0; done < options.inputs; ) {
    const n = Math.min(batch, options.inputs - done);
    const cases = fc.sample(arbitrary, { seed: options.seed + done, numRuns: n });
    let next = 0;
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (next < cases.length) {
          const c = cases[next++]!;
          const answer = await client.send({ ...c.request, timeoutMs: patience(c, timeoutMs) });
          report.inputs++;
          inc(report.byMethod, `${c.method.parent.name}.${c.method.name}`);
          inc(report.byProtocol, c.protocol);
          inc(report.byKind, c.kind);
          inc(report.byCode, answer.code);
          for (const id of acceptedIds(c, answer, answer.body)) accepted.add(id);
          // A SendStream that ended in an error may have stored the calls it answered before (or as) it
          // failed: those events are not rejected input. Known by their names (the engine gives the ids).
          if (c.method.name === "SendStream" && answer.code !== "ok") for (const n of sentEventNames(c)) partial.add(n);
          const trace = process.env["FUZZ_TRACE"];
          if (trace && c.describe().includes(trace)) log(`trace: ${c.method.name} ${c.protocol} ${c.kind} -> ${answer.code} ${answer.message.slice(0, 100)} ${answer.body.toString("hex").slice(0, 200)} :: ${c.describe().slice(0, 300)}`);
          const reason = judge(c, answer);
          if (reason) {
            inc(report.failureCounts, reason);
            if (report.failures.filter((f) => f.reason === reason).length < 5) {
              report.failures.push({
                reason, method: `${c.method.parent.name}.${c.method.name}`, protocol: c.protocol, kind: c.kind,
                code: answer.code, message: answer.message.slice(0, 300), input: c.describe(),
              });
            }
          }
        }
      }),
    );
    done += n;
    const now = await memoryMiB(options.url);
    report.memory.peakMiB = Math.max(report.memory.peakMiB, now.heap);
    report.memory.rssPeakMiB = Math.max(report.memory.rssPeakMiB, now.rss);
    if (Date.now() - lastLog > 10_000 || done === options.inputs) {
      lastLog = Date.now();
      log(`${done}/${options.inputs} inputs, ${Object.values(report.failureCounts).reduce((a, b) => a + b, 0)} failures, ${Math.round(report.memory.peakMiB)} MiB heap at most`);
    }
  }
  report.refusedStreams = client.refused;
  client.close();
  report.healthy = await healthy(options.url);
  // Memory after the flood: given a few seconds to settle.
  await new Promise((r) => setTimeout(r, 3_000));
  const after = await memoryMiB(options.url);
  report.memory.afterMiB = after.heap;
  report.memory.rssAfterMiB = after.rss;
  // Send answers once the bus has an event; the scheduler stores it after: waited for, up to 30 s.
  let stored = await storedEvents(options.url, options.keys?.admin);
  for (const settleBy = Date.now() + 30_000; Date.now() < settleBy; ) {
    const ids = new Set(stored.map((e) => e.id));
    if ([...accepted].every((id) => ids.has(id))) break;
    await new Promise((r) => setTimeout(r, 1_000));
    stored = await storedEvents(options.url, options.keys?.admin);
  }
  report.storedEvents = stored.length;
  const storedIds = new Set(stored.map((e) => e.id));
  report.missingEvents = [...accepted].filter((id) => !storedIds.has(id)).slice(0, 20);
  report.acceptedEvents = accepted.size;
  report.unexpectedEvents = stored.filter((e) => !accepted.has(e.id) && !partial.has(e.name)).slice(0, 20).map((e) => `${JSON.stringify(e.id)} (${JSON.stringify(e.name.slice(0, 40))})`);
  report.refusedStreams = client.refused;
  report.ms = Date.now() - t0;
  return report;
}
