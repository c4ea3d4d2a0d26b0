import { appendFileSync, mkdirSync } from "node:fs";
import { afterEach } from "vitest";
import { fileURLToPath } from "node:url";
import { liveStacks, stoppedStacks } from "./live-stacks.js";

/**
 * When a test fails, the logs of the stacks it had running are appended to
 * test/artifacts/failures.log: the warnings and errors of each service, then
 * its last lines. `.ci/run` prints that file after a failed run, so a
 * failure seen once in CI comes with what the services said.
 */
const ARTIFACTS = fileURLToPath(new URL("../artifacts", import.meta.url));
export const FAILURES_LOG = `${ARTIFACTS}/failures.log`;
const WARN = 40;

afterEach((ctx) => {
  const stacks = [...liveStacks, ...stoppedStacks.splice(0)];
  if (ctx.task.result?.state !== "fail" || stacks.length === 0) return;
  const out: string[] = [`\n=== ${ctx.task.file?.name ?? ""} > ${ctx.task.name} (${new Date().toISOString()})`];
  for (const stack of stacks) {
    for (const { name, lines } of stack.serviceLogs()) {
      const all = lines.join("").split("\n").filter((l) => l !== "");
      const warnings = all.filter((l) => levelOf(l) >= WARN).slice(-30);
      out.push(`--- ${stack.prefix} ${name}: ${all.length} lines, ${warnings.length} warnings or errors shown`, ...warnings);
      out.push(`--- ${stack.prefix} ${name}: last lines`, ...all.slice(-8));
    }
  }
  mkdirSync(ARTIFACTS, { recursive: true });
  appendFileSync(FAILURES_LOG, out.map((l) => (l.length > 600 ? `${l.slice(0, 600)}…` : l)).join("\n") + "\n");
});

function levelOf(line: string): number {
  const m = /"level":(\d+)/.exec(line);
  return m ? Number(m[1]) : WARN; // not JSON: a crash or a warning of node's
}
