import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { ROOT } from "./support/stack.js";

// The README's one command runs this script (after building): the order
// example against the embedded engine, printing the run's steps.
describe("examples/order-processing", () => {
  it("runs against stepwise dev: the run waits for its shipment, resumes with it and prints its journaled steps", async () => {
    const { stdout } = await promisify(execFile)(process.execPath, [`${ROOT}examples/order-processing/dist/run.js`], {
      timeout: 60_000,
    });
    expect(stdout).toMatch(/^run [0-9a-f-]{36} WAITING for shipment.created after \d+ ms/m);
    expect(stdout).toMatch(/^run [0-9a-f-]{36} COMPLETED in \d+ ms$/m);
    const steps = stdout.split("\n").filter((l) => /attempt 1/.test(l)).map((l) => l.trim().split(/\s+/)[0]);
    expect(steps).toEqual(["process-payment", "check-inventory", "schedule-shipment", "wait-for-shipment", "send-notification"]);
    expect(stdout).toContain('"shipmentId":"ship_o-1001"');
    expect(stdout).toContain('"tracking":"TRK-778899"');
  });
});
