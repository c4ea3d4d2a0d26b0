// The cases of the fuzz: for each method and protocol, the fast-check
// arbitraries of what a hostile or careless client sends (generated
// messages, mutated encodings, junk, lying envelopes, encodings over
// garbage, worker streams in any order, hostile Authorization headers),
// with what a reply must not echo (fuzz-run.ts judges the answers).
import { fromBinary, fromJsonString, type DescMethod } from "@bufbuild/protobuf";
import { SendStreamRequestSchema, WorkerService } from "@stepwise/proto";
import fc from "fast-check";
import { encode, jsonJunk, messageInit, mutate, wireJunk } from "./messages.js";
import { envelope, type Protocol, type WireRequest } from "./wire.js";

/** What kind of input a case sends. */
export type InputKind = "generated" | "mutated" | "junk" | "envelope" | "encoding" | "sequence" | "auth";

/** Inputs at least this long must not come back in an error. */
const ECHO_PROBE = 200;

export interface Case {
  method: DescMethod;
  protocol: Protocol;
  kind: InputKind;
  request: Omit<WireRequest, "timeoutMs">;
  /** Long strings of the input, which an error must not echo. */
  probes: string[];
  /** Names of the events a generated SendStream carries. */
  eventNames: string[];
  describe: () => string;
}

/** The deadline of the calls that are not a worker's stream. */
const DEADLINE_MS = 3_000;

const streaming = (m: DescMethod) => m.methodKind !== "unary";
const pathOf = (m: DescMethod) => `/${m.parent.typeName}/${m.name}`;

function longStrings(value: unknown, out: string[] = [], depth = 0): string[] {
  if (depth > 8 || out.length > 8) return out;
  if (typeof value === "string") {
    if (value.length >= ECHO_PROBE) out.push(value.slice(0, ECHO_PROBE));
  } else if (Array.isArray(value)) {
    for (const v of value.slice(0, 20)) longStrings(v, out, depth + 1);
  } else if (value && typeof value === "object" && !(value instanceof Uint8Array)) {
    for (const v of Object.values(value).slice(0, 40)) longStrings(v, out, depth + 1);
  }
  return out;
}

/**
 * The names of the events a SendStream case carried, as the server may
 * have read them: the generated ones, and those of any message that still
 * decodes after a mutation.
 */
export function sentEventNames(c: Case): string[] {
  const names = [...c.eventNames];
  for (const bytes of c.request.messages) {
    try {
      const m =
        c.protocol === "connect-json"
          ? fromJsonString(SendStreamRequestSchema, Buffer.from(bytes).toString(), { ignoreUnknownFields: true })
          : fromBinary(SendStreamRequestSchema, bytes);
      for (const call of m.calls) for (const e of call.events) names.push(e.name);
    } catch {
      // Did not decode: the server could not have stored it either.
    }
  }
  return names;
}

function eventNamesOf(inits: ReadonlyArray<Record<string, unknown>>): string[] {
  const calls = inits.flatMap((i) => (i["calls"] as Array<{ events?: Array<{ name?: string }> }> | undefined) ?? []);
  return calls.flatMap((c) => (c.events ?? []).map((e) => e.name ?? ""));
}

function summary(value: unknown): string {
  const text = JSON.stringify(value, (_k, v: unknown) =>
    typeof v === "bigint" ? `${v}n` : v instanceof Uint8Array ? `bytes(${v.length})` : typeof v === "string" && v.length > 80 ? `${JSON.stringify(v.slice(0, 40))}…(${v.length} chars)` : v,
  );
  return text && text.length > 400 ? `${text.slice(0, 400)}…` : (text ?? String(value));
}

const hex = (b: Uint8Array) => (b.length > 64 ? `${Buffer.from(b.slice(0, 64)).toString("hex")}…(${b.length} bytes)` : Buffer.from(b).toString("hex"));

/** Keeps generated requests from waiting on purpose longer than the fuzz waits for an answer. */
function bounded(method: DescMethod, init: Record<string, unknown>): Record<string, unknown> {
  if (method.name === "WaitForRuns" && (init["timeoutMs"] === undefined || init["timeoutMs"] === 0)) return { ...init, timeoutMs: 300 };
  if (method.name === "WaitForRuns" && typeof init["timeoutMs"] === "number" && (init["timeoutMs"] > 1000 || init["timeoutMs"] === 0) && init["timeoutMs"] <= 600_000) {
    return { ...init, timeoutMs: 300 };
  }
  return init;
}

/** The arbitrary of one case of a method in a protocol. */
export function caseOf(method: DescMethod, protocol: Protocol, keys?: { admin: string; worker: string }): fc.Arbitrary<Case> {
  const input = method.input;
  const json = protocol === "connect-json";
  // Calls that may wait by design (WaitForRuns, WatchRuns) carry a deadline the server must keep;
  // a worker's stream carries none: the server must end it once the worker has closed its side.
  const deadlineMs = method.parent.typeName === WorkerService.typeName ? undefined : DEADLINE_MS;
  const base = { method, protocol, streaming: streaming(method), path: pathOf(method), deadlineMs };
  const oneMessage = messageInit(input).map((init) => bounded(method, init));
  const encoded = (init: Record<string, unknown>) => {
    const e = encode(input, init);
    return e ? (json ? (e.json ?? Buffer.from("{}")) : e.binary) : new Uint8Array();
  };

  const generated = fc.array(oneMessage, { minLength: 1, maxLength: streaming(method) ? 5 : 1 }).map(
    (inits): Case => ({
      ...base,
      kind: "generated",
      request: { ...base, messages: inits.map(encoded) },
      probes: longStrings(inits),
      eventNames: method.name === "SendStream" ? eventNamesOf(inits) : [],
      describe: () => summary(inits),
    }),
  );

  const mutated = oneMessage.chain((init) => {
    const bytes = encoded(init);
    return (json ? jsonJunk(input) : mutate(bytes)).map(
      (m): Case => ({
        ...base,
        kind: "mutated",
        request: { ...base, messages: [m] },
        probes: longStrings(init),
        eventNames: [],
        describe: () => (json ? summary(Buffer.from(m).toString()) : `${summary(init)} mutated to ${hex(m)}`),
      }),
    );
  });

  const junk = (json ? jsonJunk(input) : wireJunk).map(
    (m): Case => ({ ...base, kind: "junk", request: { ...base, messages: [m] }, probes: [], eventNames: [], describe: () => (json ? summary(Buffer.from(m).toString()) : hex(m)) }),
  );

  // Envelopes that lie: a compressed flag with no encoding, a length past
  // the end or short of it, flags no protocol defines, a header cut short.
  const framed = base.streaming || protocol === "grpc" || protocol === "grpc-web";
  const envelopeCase = fc
    .tuple(oneMessage, fc.constantFrom("compressed", "long", "short", "flags", "cut", "empty", "two"), fc.integer({ min: 0, max: 255 }))
    .map(([init, how, flags]): Case => {
      const m = encoded(init);
      const raw =
        how === "compressed" ? envelope(m, 1)
        : how === "long" ? envelope(m, 0, m.length + 1 + (flags << 8))
        : how === "short" ? envelope(m, 0, Math.max(0, m.length - 1))
        : how === "flags" ? envelope(m, flags)
        : how === "cut" ? envelope(m).slice(0, 3)
        : how === "empty" ? new Uint8Array()
        : Uint8Array.from([...envelope(m), ...envelope(m)]);
      return { ...base, kind: "envelope", request: { ...base, messages: [m], raw }, probes: [], eventNames: [], describe: () => `${how} envelope (flags ${flags}) of ${summary(init)}` };
    });

  // Encodings over bytes that are not what they claim.
  const encodingCase = fc
    .tuple(fc.constantFrom("gzip", "br", "zstd", "deflate", "snappy", "identity"), fc.uint8Array({ minLength: 0, maxLength: 64 }))
    .map(([encoding, garbage]): Case => {
      const headers: Record<string, string> =
        protocol === "grpc" || protocol === "grpc-web" ? { "grpc-encoding": encoding }
        : base.streaming ? { "connect-content-encoding": encoding }
        : { "content-encoding": encoding };
      const raw = framed ? envelope(garbage, 1) : garbage;
      return { ...base, kind: "encoding", request: { ...base, messages: [garbage], raw, headers }, probes: [], eventNames: [], describe: () => `${encoding} over ${hex(garbage)}` };
    });

  // A valid input with an Authorization header no key is, or the key of a scope that may not call it.
  const authCase = fc
    .tuple(
      oneMessage,
      fc.oneof(
        fc.constantFrom("", "Bearer", "Bearer ", "bearer sw_", "Basic dXNlcjpwYXNz", "Bearer a b", `Bearer ${"k".repeat(4096)}`),
        fc.stringMatching(/^[\x20-\x7e]{0,80}$/),
        fc.stringMatching(/^sw_[A-Za-z0-9_-]{43}$/).map((k) => `Bearer ${k}`),
        fc.constant(`Bearer ${method.parent.typeName === WorkerService.typeName ? (keys?.admin ?? "") : (keys?.worker ?? "")}`),
      ),
    )
    .map(([init, authorization]): Case => {
      const m = encoded(init);
      return {
        ...base,
        kind: "auth",
        request: { ...base, messages: [m], headers: { authorization } },
        probes: authorization.length >= ECHO_PROBE ? [authorization.slice(7)] : [],
        eventNames: [],
        describe: () => `${summary(init)} with Authorization ${JSON.stringify(authorization.slice(0, 60))}`,
      };
    });

  const kinds: Array<fc.WeightedArbitrary<Case>> = [
    { weight: keys ? 3 : 0, arbitrary: authCase },
    { weight: 10, arbitrary: generated },
    { weight: 4, arbitrary: mutated },
    { weight: 2, arbitrary: junk },
    { weight: framed ? 2 : 0, arbitrary: envelopeCase },
    { weight: 1, arbitrary: encodingCase },
  ];
  if (method.parent.typeName === WorkerService.typeName) kinds.push({ weight: 6, arbitrary: workerSequence(method, protocol) });
  return fc.oneof(...kinds.filter((k) => k.weight > 0));
}

/**
 * A worker's stream as a hostile worker writes it: a register (valid or
 * not) and then messages in any order, for leases and runs it was never
 * given, twice registered, then its side closed.
 */
function workerSequence(method: DescMethod, protocol: Protocol): fc.Arbitrary<Case> {
  const input = method.input;
  const json = protocol === "connect-json";
  const register = fc.record({
    appId: fc.oneof(fc.constant("fuzz"), fc.stringMatching(/^[a-z]{1,8}$/)),
    workerId: fc.stringMatching(/^w[0-9]{1,4}$/),
    capacity: fc.oneof(fc.constant(1), fc.integer({ min: 0, max: 100_000 })),
    functions: fc.array(
      fc.record({ id: fc.stringMatching(/^f[a-z0-9]{0,6}$/), triggers: fc.constant([{ event: "fuzz.never" }]) }, { requiredKeys: ["id"] }),
      { maxLength: 3 },
    ),
  }, { requiredKeys: [] }).map((value) => ({ message: { case: "register", value } }));
  const any = messageInit(input);
  return fc
    .tuple(fc.boolean(), register, fc.array(any, { maxLength: 6 }))
    .map(([registerFirst, reg, rest]): Case => {
      const inits = registerFirst ? [reg as Record<string, unknown>, ...rest] : rest;
      const messages = inits.map((init) => {
        const e = encode(input, init);
        return e ? (json ? (e.json ?? Buffer.from("{}")) : e.binary) : new Uint8Array();
      });
      return {
        method,
        protocol,
        kind: "sequence",
        request: { path: pathOf(method), protocol, streaming: true, messages },
        probes: longStrings(inits),
        eventNames: [],
        describe: () => summary(inits),
      };
    });
}
