import type { FuzzReport } from "./fuzz-run.js";

/**
 * The heap in use after a flood may exceed its baseline by this much (MiB)
 * and this share, and no more. Generous: nothing makes the engine collect
 * its garbage before the reading (an ingest went from 25 to 131 MiB in CI
 * three seconds after 2,000 inputs; stepwise dev from 48 to 64 after 30,000),
 * so this catches a leak that grows with the inputs, not a small one.
 */
export const MEMORY_SLACK_MIB = 256;
export const MEMORY_SLACK_SHARE = 3;

/** What is wrong with a fuzz run: an empty list when it passed. */
export function checkReport(r: FuzzReport): string[] {
  const problems: string[] = [];
  for (const [reason, n] of Object.entries(r.failureCounts)) problems.push(`${n} answers: ${reason}`);
  if (!r.healthy) problems.push("the engine did not answer /healthz after the flood");
  if (r.unexpectedEvents.length > 0) problems.push(`events stored that no accepted Send sent: ${r.unexpectedEvents.join(", ")}`);
  if (r.missingEvents.length > 0) problems.push(`accepted events not stored 30 s after the flood: ${r.missingEvents.join(", ")}`);
  const bound = r.memory.baselineMiB * (1 + MEMORY_SLACK_SHARE) + MEMORY_SLACK_MIB;
  if (!(r.memory.afterMiB <= bound)) {
    problems.push(`heap ${r.memory.afterMiB.toFixed(0)} MiB in use after the flood, over ${bound.toFixed(0)} (baseline ${r.memory.baselineMiB.toFixed(0)} MiB)`);
  }
  return problems;
}

function table(title: string, counts: Record<string, number>): string {
  const rows = Object.entries(counts).sort((a, b) => b[1] - a[1]);
  const width = Math.max(title.length, ...rows.map(([k]) => k.length));
  return [`${title.padEnd(width)}  inputs`, ...rows.map(([k, n]) => `${k.padEnd(width)}  ${String(n).padStart(6)}`)].join("\n");
}

/** The report as text: counts by method, protocol, kind and code, then the failures. */
export function formatReport(r: FuzzReport, problems: readonly string[], seed: number): string {
  const out = [
    `fuzz: ${r.inputs} inputs in ${(r.ms / 1000).toFixed(1)} s, seed ${seed}`,
    "",
    table("method", r.byMethod),
    "",
    table("protocol", r.byProtocol),
    "",
    table("input kind", r.byKind),
    "",
    table("answer", r.byCode),
    "",
    `events: ${r.acceptedEvents} accepted, ${r.storedEvents} stored`,
    `heap in use: ${r.memory.baselineMiB.toFixed(0)} MiB before, ${r.memory.peakMiB.toFixed(0)} MiB at most, ${r.memory.afterMiB.toFixed(0)} MiB after`,
    `RSS: ${r.memory.rssBaselineMiB.toFixed(0)} MiB before, ${r.memory.rssPeakMiB.toFixed(0)} MiB at most, ${r.memory.rssAfterMiB.toFixed(0)} MiB after (with stepwise dev, mostly embedded Postgres, whose memory never shrinks)`,
    `healthy after: ${r.healthy ? "yes" : "NO"}`,
    "",
  ];
  if (r.failures.length > 0) {
    out.push("failures (first of each):");
    for (const f of r.failures) out.push(`- ${f.reason}: ${f.method} ${f.protocol} ${f.kind} -> ${f.code} ${JSON.stringify(f.message)}\n    input: ${f.input}`);
    out.push("");
  }
  out.push(problems.length === 0 ? "PASS" : `FAIL\n${problems.map((p) => `- ${p}`).join("\n")}`, "");
  return out.join("\n");
}
