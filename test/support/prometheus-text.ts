// A strict reader of the Prometheus text exposition format (version 0.0.4),
// for the tests that scrape /metrics: every line must be a HELP, a TYPE or a
// sample line (or empty, which the format allows), every sample must belong to a family whose TYPE came first,
// a family's lines must be contiguous, and a histogram's buckets must be
// cumulative up to +Inf, which must equal its _count. Anything else throws,
// naming the line.

/** One sample line. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** A metric family: its TYPE, HELP and samples. */
export interface Family {
  name: string;
  type: "counter" | "gauge" | "histogram" | "summary" | "untyped";
  help: string | undefined;
  samples: Sample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set(["counter", "gauge", "histogram", "summary", "untyped"]);

/** Parses a scrape; throws on the first line that is not valid. */
export function parsePrometheusText(text: string): Map<string, Family> {
  const families = new Map<string, Family>();
  /** The TYPE of each family, as declared. */
  const typeOf = new Map<string, Family["type"]>();
  const closed = new Set<string>();
  let current: Family | undefined;
  const lines = text.split("\n");
  if (lines[lines.length - 1] !== "") throw new Error("the text does not end with a line feed");
  lines.pop();
  const fail = (i: number, why: string): never => {
    throw new Error(`line ${i + 1} (${JSON.stringify(lines[i])}): ${why}`);
  };
  const enter = (i: number, name: string): Family => {
    if (current && current.name !== name) closed.add(current.name);
    if (closed.has(name)) fail(i, `the lines of ${name} are not contiguous`);
    let f = families.get(name);
    if (!f) {
      f = { name, type: "untyped", help: undefined, samples: [] };
      families.set(name, f);
    }
    current = f;
    return f;
  };
  lines.forEach((line, i) => {
    if (line.startsWith("#")) {
      const m = /^# (HELP|TYPE) (\S+)(?: (.*))?$/.exec(line);
      if (!m) return fail(i, "a comment that is neither HELP nor TYPE");
      const [, kind, name, rest] = m as unknown as [string, string, string, string | undefined];
      if (!METRIC_NAME.test(name)) fail(i, "not a metric name");
      const f = enter(i, name);
      if (kind === "HELP") {
        if (f.help !== undefined) fail(i, "a second HELP");
        f.help = unescapeHelp(rest ?? "", () => fail(i, "a bad escape in HELP"));
      } else {
        if (!rest || !TYPES.has(rest)) fail(i, "an unknown type");
        if (f.samples.length > 0 || typeOf.has(name)) fail(i, "TYPE after samples, or twice");
        typeOf.set(name, rest as Family["type"]);
        f.type = rest as Family["type"];
      }
      return;
    }
    // The format allows empty lines (prom-client puts one between families).
    if (line === "") return;
    const sample = parseSample(line, (why) => fail(i, why));
    const family = familyOf(sample.name, typeOf);
    if (!typeOf.has(family)) fail(i, `a sample of ${family}, whose TYPE did not come before`);
    enter(i, family).samples.push(sample);
  });
  for (const f of families.values()) if (f.type === "histogram") checkHistogram(f);
  return families;
}

/** The family a sample name belongs to: a histogram's _bucket, _sum and _count are its own. */
function familyOf(name: string, types: ReadonlyMap<string, Family["type"]>): string {
  for (const suffix of ["_bucket", "_sum", "_count"]) {
    if (!name.endsWith(suffix)) continue;
    const base = name.slice(0, -suffix.length);
    const t = types.get(base);
    if (t === "histogram" || (t === "summary" && suffix !== "_bucket")) return base;
  }
  return name;
}

function parseSample(line: string, fail: (why: string) => never): Sample {
  const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)(?: (-?\d+))?$/.exec(line);
  if (!m) return fail("not a sample line");
  const [, name, labelText, valueText] = m as unknown as [string, string, string | undefined, string];
  return { name, labels: labelText ? parseLabels(labelText, fail) : {}, value: parseValue(valueText, fail) };
}

function parseLabels(text: string, fail: (why: string) => never): Record<string, string> {
  const labels: Record<string, string> = {};
  let i = 1;
  const end = text.length - 1;
  while (i < end) {
    const eq = text.indexOf("=", i);
    if (eq < 0) fail("a label without a value");
    const name = text.slice(i, eq);
    if (!LABEL_NAME.test(name)) fail(`a bad label name ${JSON.stringify(name)}`);
    if (name in labels) fail(`label ${name} twice`);
    if (text[eq + 1] !== '"') fail("a label value not in quotes");
    let j = eq + 2;
    let value = "";
    for (;;) {
      const c = text[j];
      if (c === undefined || j >= end) return fail("an unterminated label value");
      if (c === '"') break;
      if (c === "\\") {
        const n = text[j + 1];
        if (n === "\\") value += "\\";
        else if (n === '"') value += '"';
        else if (n === "n") value += "\n";
        else fail("a bad escape in a label value");
        j += 2;
        continue;
      }
      value += c;
      j++;
    }
    labels[name] = value;
    i = j + 1;
    if (text[i] === ",") i++;
    else if (i !== end) fail("labels not separated by commas");
  }
  return labels;
}

function parseValue(text: string, fail: (why: string) => never): number {
  // As Prometheus reads a value (Go's ParseFloat): NaN and Inf in any case;
  // prom-client writes "Nan" (an event loop delay with no sample yet).
  const special = text.toLowerCase();
  if (special === "+inf" || special === "inf") return Infinity;
  if (special === "-inf") return -Infinity;
  if (special === "nan") return NaN;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) fail(`not a number: ${text}`);
  return Number(text);
}

function unescapeHelp(text: string, fail: () => never): string {
  return text.replace(/\\(.)/g, (_, c: string) => (c === "\\" ? "\\" : c === "n" ? "\n" : fail()));
}

/** Buckets of each series cumulative, ending at +Inf, which equals _count; a _sum for each. */
function checkHistogram(f: Family): void {
  const series = new Map<string, { buckets: Array<[number, number]>; count?: number; sum?: number }>();
  for (const s of f.samples) {
    const { le, ...rest } = s.labels;
    const key = JSON.stringify(Object.entries(rest).sort());
    const entry = series.get(key) ?? { buckets: [] };
    series.set(key, entry);
    if (s.name === `${f.name}_bucket`) {
      if (le === undefined) throw new Error(`${f.name}: a bucket without le`);
      entry.buckets.push([parseValue(le, (why) => { throw new Error(`${f.name}: le ${why}`); }), s.value]);
    } else if (s.name === `${f.name}_count`) entry.count = s.value;
    else if (s.name === `${f.name}_sum`) entry.sum = s.value;
    else throw new Error(`${f.name}: a sample ${s.name} that is not a bucket, sum or count`);
  }
  for (const [key, e] of series) {
    const last = e.buckets[e.buckets.length - 1];
    if (!last || last[0] !== Infinity) throw new Error(`${f.name} ${key}: no +Inf bucket last`);
    for (let i = 1; i < e.buckets.length; i++) {
      const [prevLe, prev] = e.buckets[i - 1]!;
      const [le, n] = e.buckets[i]!;
      if (!(le > prevLe) || n < prev) throw new Error(`${f.name} ${key}: buckets not cumulative in increasing le`);
    }
    if (e.count !== last[1]) throw new Error(`${f.name} ${key}: _count ${e.count} is not the +Inf bucket ${last[1]}`);
    if (e.sum === undefined) throw new Error(`${f.name} ${key}: no _sum`);
  }
}

/**
 * The value of the sample `name` whose labels are exactly `labels`, 0 when
 * there is none (a labelled counter shows no series before its first
 * increment); throws when the family is not in the scrape at all.
 */
export function sampleValue(families: ReadonlyMap<string, Family>, name: string, labels: Record<string, string> = {}): number {
  const family = families.get(familyOf(name, new Map([...families].map(([n, f]) => [n, f.type]))));
  if (!family) throw new Error(`no metric ${name} in the scrape`);
  const want = JSON.stringify(Object.entries(labels).sort());
  const found = family.samples.filter((s) => s.name === name && JSON.stringify(Object.entries(s.labels).sort()) === want);
  if (found.length > 1) throw new Error(`${name} ${want}: ${found.length} samples`);
  return found[0]?.value ?? 0;
}
