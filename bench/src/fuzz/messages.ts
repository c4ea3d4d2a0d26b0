// Generated request messages: for any message of the contract, fast-check
// arbitraries read from its descriptor, whose values lean on the edges
// (empty, huge, NUL, lone surrogates, numbers at their limits, enum values
// the contract does not name), and mutations of their encodings.
import { create, toBinary, toJsonString, type DescField, type DescMessage } from "@bufbuild/protobuf";
import { ScalarType } from "@bufbuild/protobuf";
import fc from "fast-check";

/** Strings that have broken services before, mixed with random ones. */
const NASTY = [
  "", " ", "\u0000", "a\u0000", "\u0000\u0000b", "\uD800", "a\uDFFFb", "\uFFFE", "' OR 1=1 --", "'; DROP TABLE runs; --", "%s%s%n",
  "../../../../etc/passwd", "${7*7}", "{{7*7}}", "<script>x</script>", "null", "{}", "[]", "{\"a\":", "\\", "\"", "*", ">", "a.b.*",
  "stepwise/run.failed", "event.data.x == 1", "event.data.", "00000000-0000-0000-0000-000000000000", "NaN", "-1", "1e400",
  "\u202Eevil", "é".normalize("NFD"), "𝕏", "a".repeat(257), "a".repeat(1025),
];

const hugeString = fc.constantFrom(1_000, 70_000, 1_100_000).map((n) => "h".repeat(n));

/** Strings of any size up to 3,000 characters. */
export const hostileString: fc.Arbitrary<string> = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(...NASTY) },
  { weight: 4, arbitrary: fc.string({ maxLength: 24 }) },
  { weight: 3, arbitrary: fc.string({ unit: "binary", maxLength: 24 }) },
  { weight: 2, arbitrary: fc.uuid() },
  { weight: 2, arbitrary: fc.stringMatching(/^[a-z][a-z0-9._-]{0,20}$/) },
  { weight: 1, arbitrary: fc.nat(3000).map((n) => "x".repeat(n)) },
  { weight: 1, arbitrary: fc.json({ maxDepth: 3 }) },
);

/** Strings of a top-level field, which may also be huge (to 1.1 million characters). */
const topString = fc.oneof({ weight: 20, arbitrary: hostileString }, { weight: 1, arbitrary: hugeString });

const int32 = fc.oneof(fc.constantFrom(0, 1, -1, 2 ** 31 - 1, -(2 ** 31)), fc.integer());
const uint32 = fc.oneof(fc.constantFrom(0, 1, 1000, 1001, 5000, 2 ** 32 - 1), fc.nat());
const int64 = fc.oneof(fc.constantFrom(0n, -1n, 2n ** 63n - 1n, -(2n ** 63n)), fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }));
const uint64 = fc.oneof(fc.constantFrom(0n, 1n, 2n ** 64n - 1n), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }));
const double = fc.oneof(fc.constantFrom(0, -0, NaN, Infinity, -Infinity, 1e308), fc.double());

function scalar(type: ScalarType, depth = 1): fc.Arbitrary<unknown> {
  switch (type) {
    case ScalarType.STRING:
      return depth <= 1 ? topString : hostileString;
    case ScalarType.BOOL:
      return fc.boolean();
    case ScalarType.BYTES:
      return fc.uint8Array({ maxLength: 64 });
    case ScalarType.DOUBLE:
    case ScalarType.FLOAT:
      return double;
    case ScalarType.INT64:
    case ScalarType.SINT64:
    case ScalarType.SFIXED64:
      return int64;
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return uint64;
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      return uint32;
    default:
      return int32;
  }
}

const timestamp = fc.record({
  seconds: fc.oneof(fc.constantFrom(0n, -62135596801n, 253402300800n, 1_800_000_000n), fc.bigInt({ min: -(2n ** 40n), max: 2n ** 40n })),
  nanos: fc.oneof(fc.constantFrom(0, 999_999_999, 1_000_000_000, -1), fc.integer()),
});

function single(field: DescField, depth: number): fc.Arbitrary<unknown> {
  switch (field.fieldKind) {
    case "scalar":
      return scalar(field.scalar, depth);
    case "enum":
      return fc.oneof(fc.constantFrom(...field.enum.values.map((v) => v.number)), fc.integer({ min: -3, max: 300 }));
    case "message":
      return messageInit(field.message, depth + 1);
    default:
      return fc.constant(undefined);
  }
}

function elementOf(field: DescField, depth: number): fc.Arbitrary<unknown> {
  if (field.fieldKind === "list") {
    if (field.listKind === "scalar") return scalar(field.scalar);
    if (field.listKind === "enum") return fc.integer({ min: -3, max: 300 });
    return messageInit(field.message, depth + 1);
  }
  return fc.constant(undefined);
}

/** An init object for create(), every field optional, nested messages to a depth of 4. */
export function messageInit(desc: DescMessage, depth = 0): fc.Arbitrary<Record<string, unknown>> {
  if (desc.typeName === "google.protobuf.Timestamp") return timestamp as fc.Arbitrary<Record<string, unknown>>;
  if (depth > 4) return fc.constant({});
  const parts: Record<string, fc.Arbitrary<unknown>> = {};
  for (const field of desc.fields) {
    if (field.oneof) continue;
    if (field.fieldKind === "list") {
      parts[field.localName] = fc.oneof(
        { weight: 8, arbitrary: fc.array(elementOf(field, depth), { maxLength: depth > 2 ? 1 : 4 }) },
        // Now and then a long list (Send's 5,000, a batch of thousands): one small element many times.
        // (Strings in it are short: a 5,000-element list of 3,000-character strings would be a test of the fuzz's memory.)
        {
          weight: depth === 0 ? 1 : 0,
          arbitrary: fc
            .tuple(fc.constantFrom(1001, 5001), field.listKind === "scalar" && field.scalar === ScalarType.STRING ? fc.string({ maxLength: 16 }) : elementOf(field, 4))
            .map(([n, e]) => Array.from({ length: n }, () => e)),
        },
      );
    } else if (field.fieldKind === "map") {
      const value = field.mapKind === "message" ? messageInit(field.message, depth + 1) : field.mapKind === "enum" ? fc.integer({ min: 0, max: 5 }) : scalar(field.scalar);
      parts[field.localName] = fc.dictionary(hostileString.filter((s) => s.length < 100), value, { maxKeys: 3 });
    } else {
      parts[field.localName] = single(field, depth);
    }
  }
  for (const oneof of desc.oneofs) {
    parts[oneof.localName] = fc.oneof(
      fc.constant(undefined),
      ...oneof.fields.map((f) => single(f, depth).map((value) => ({ case: f.localName, value }))),
    );
  }
  return fc.record(parts, { requiredKeys: [] });
}

/** A message of desc encoded as binary and as JSON; JSON is undefined where the value has no JSON form (an invalid time). */
export function encode(desc: DescMessage, init: Record<string, unknown>): { binary: Uint8Array; json: Uint8Array | undefined } | undefined {
  let message;
  try {
    message = create(desc, init as never);
  } catch {
    return undefined;
  }
  let binary: Uint8Array;
  try {
    binary = toBinary(desc, message);
  } catch {
    return undefined;
  }
  let json: Uint8Array | undefined;
  try {
    json = Buffer.from(toJsonString(desc, message));
  } catch {
    json = undefined;
  }
  return { binary, json };
}

/** Random protobuf wire data: tags of any field number and wire type, varints that never end, lengths past the end. */
export const wireJunk: fc.Arbitrary<Uint8Array> = fc
  .array(
    fc.oneof(
      fc.tuple(fc.integer({ min: 1, max: 40 }), fc.integer({ min: 0, max: 7 }), fc.uint8Array({ maxLength: 12 })).map(([n, w, payload]) =>
        Uint8Array.from([(n << 3) | w, ...payload]),
      ),
      fc.constant(Uint8Array.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f])),
      fc.constant(Uint8Array.from([0x08, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80])),
      fc.constant(Uint8Array.from([0x0a, 0x03, 0xc3, 0x28, 0xff])), // invalid UTF-8 in a string
      fc.uint8Array({ maxLength: 16 }),
    ),
    { maxLength: 6 },
  )
  .map((parts) => Uint8Array.from(parts.flatMap((p) => [...p])));

/** Mutations of valid bytes: truncated, a byte flipped, junk inserted, doubled. */
export function mutate(bytes: Uint8Array): fc.Arbitrary<Uint8Array> {
  const n = bytes.length;
  return fc.oneof(
    fc.nat(Math.max(0, n - 1)).map((cut) => bytes.slice(0, cut)),
    fc.tuple(fc.nat(Math.max(0, n - 1)), fc.integer({ min: 1, max: 255 })).map(([i, x]) => {
      const out = bytes.slice();
      if (n > 0) out[i] = out[i]! ^ x;
      return out;
    }),
    fc.tuple(fc.nat(n), wireJunk).map(([i, junk]) => Uint8Array.from([...bytes.slice(0, i), ...junk, ...bytes.slice(i)])),
    fc.constant(Uint8Array.from([...bytes, ...bytes])),
  );
}

/** JSON a request body might hold instead of the message: any value, wrong types under the right names, broken text. */
export function jsonJunk(desc: DescMessage): fc.Arbitrary<Uint8Array> {
  const names = desc.fields.map((f) => f.jsonName);
  return fc
    .oneof(
      fc.json({ maxDepth: 3 }),
      fc.dictionary(fc.constantFrom(...(names.length ? names : ["x"]), "unknownField", "__proto__", "constructor"), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 4 }).map((o) =>
        JSON.stringify(o),
      ),
      fc.json({ maxDepth: 2 }).map((t) => t.slice(0, Math.max(0, t.length - 1))),
      fc.constantFrom("", "{", "{\"a\":1,}", "\u0000", "\uFEFF{}", "[".repeat(2000), `{"x":"${"\\u0000"}"}`),
    )
    .map((t) => Buffer.from(t));
}
