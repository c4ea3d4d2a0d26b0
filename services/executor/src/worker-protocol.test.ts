import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import {
  ConnectRequestSchema,
  DrainSchema,
  ErrorDetailSchema,
  HeartbeatSchema,
  MAX_OUTPUT_BYTES,
  MAX_SUSPEND_MS,
  RequestBatchSchema,
  RunResultSchema,
  StepResultSchema,
  SuspendSchema,
  type ConnectRequest,
} from "@stepwise/proto";
import { describe, expect, it } from "vitest";
import { decodeWorkerMessages, stepAckMessage } from "./worker-protocol.js";

const req = (message: ConnectRequest["message"]) => create(ConnectRequestSchema, { message });
const error = (message: string) => create(ErrorDetailSchema, { name: "Error", message });

describe("decodeWorkerMessages", () => {
  it("decodes a step result into the journal's record, once", () => {
    const [m] = decodeWorkerMessages(
      req({
        case: "stepResult",
        value: create(StepResultSchema, {
          runId: "r",
          lease: 3,
          stepKey: "charge:0",
          stepId: "charge",
          attempt: 2,
          startedAt: timestampFromMs(1_000),
          endedAt: timestampFromMs(1_500),
          result: { case: "outputJson", value: '{"ok":true}' },
        }),
      }),
    );
    expect(m).toEqual({
      kind: "step",
      step: {
        runId: "r",
        lease: 3,
        stepKey: "charge:0",
        stepId: "charge",
        attempt: 2,
        startedAtMs: 1_000,
        endedAtMs: 1_500,
        outputJson: '{"ok":true}',
        error: undefined,
      },
    });
  });

  it("fails a step or a run whose result is over MAX_OUTPUT_BYTES, which the SDKs refuse to send", () => {
    const big = JSON.stringify("x".repeat(MAX_OUTPUT_BYTES));
    const [step] = decodeWorkerMessages(
      req({ case: "stepResult", value: create(StepResultSchema, { runId: "r", lease: 1, stepKey: "k:0", stepId: "k", result: { case: "outputJson", value: big } }) }),
    );
    expect(step).toMatchObject({ kind: "step", step: { error: { name: "OutputTooLarge", message: `step "k": its result is ${MAX_OUTPUT_BYTES + 2} bytes of JSON, more than the ${MAX_OUTPUT_BYTES} allowed` } } });
    const [run] = decodeWorkerMessages(req({ case: "runResult", value: create(RunResultSchema, { runId: "r", lease: 1, result: { case: "outputJson", value: big } }) }));
    expect(run).toMatchObject({ kind: "run-ended", end: { kind: "failed", error: { name: "OutputTooLarge" } } });
    // At the limit, it is journaled.
    const [ok] = decodeWorkerMessages(
      req({ case: "stepResult", value: create(StepResultSchema, { runId: "r", lease: 1, stepKey: "k:0", stepId: "k", result: { case: "outputJson", value: JSON.stringify("y".repeat(MAX_OUTPUT_BYTES - 2)) } }) }),
    );
    expect(ok?.kind === "step" && ok.step.error === undefined && ok.step.outputJson?.length === MAX_OUTPUT_BYTES).toBe(true);
  });

  it("tells a failed attempt to be retried from a step that failed for good", () => {
    const failed = (retryAt?: number) =>
      req({
        case: "stepResult",
        value: create(StepResultSchema, {
          runId: "r",
          lease: 1,
          stepKey: "s:0",
          stepId: "s",
          attempt: 1,
          result: { case: "error", value: error("boom") },
          ...(retryAt !== undefined ? { retryAt: timestampFromMs(retryAt) } : {}),
        }),
      });
    const [retried] = decodeWorkerMessages(failed(5_000));
    expect(retried).toMatchObject({ kind: "attempt", attempt: { stepKey: "s:0", retryAtMs: 5_000, error: { name: "Error", message: "boom" } } });
    const [ended] = decodeWorkerMessages(failed());
    expect(ended).toMatchObject({ kind: "step", step: { stepKey: "s:0", error: { message: "boom" } } });
    expect(ended?.kind === "step" && ended.step.outputJson).toBeUndefined();
  });

  it("keeps a handler's retry within the longest suspension, and reads a run result without output as null", () => {
    const before = Date.now();
    const [retry] = decodeWorkerMessages(
      req({
        case: "runResult",
        value: create(RunResultSchema, {
          runId: "r",
          lease: 1,
          result: { case: "error", value: error("x") },
          retryAt: timestampFromMs(before + 10 * MAX_SUSPEND_MS),
        }),
      }),
    );
    expect(retry?.kind).toBe("run-retry");
    const retryAtMs = retry?.kind === "run-retry" ? retry.retryAtMs : 0;
    expect(retryAtMs).toBeGreaterThanOrEqual(before + MAX_SUSPEND_MS);
    expect(retryAtMs).toBeLessThanOrEqual(Date.now() + MAX_SUSPEND_MS);
    const [done] = decodeWorkerMessages(req({ case: "runResult", value: create(RunResultSchema, { runId: "r", lease: 1 }) }));
    expect(done).toEqual({ kind: "run-ended", runId: "r", lease: 1, end: { kind: "completed", outputJson: "null" } });
  });

  it("refuses a suspension with no awaits, instead of throwing", () => {
    const [m] = decodeWorkerMessages(req({ case: "suspend", value: create(SuspendSchema, { runId: "r", lease: 2 }) }));
    expect(m).toEqual({ kind: "suspend", runId: "r", lease: 2, suspension: { refused: "[invalid_argument] suspend.awaits: must hold 1 to 1000 awaits" } });
  });

  it("decodes a batch's messages in order, and ignores a batch inside a batch", () => {
    const heartbeat = req({ case: "heartbeat", value: create(HeartbeatSchema, {}) });
    const inner = req({ case: "batch", value: create(RequestBatchSchema, { messages: [heartbeat] }) });
    const outer = req({ case: "batch", value: create(RequestBatchSchema, { messages: [heartbeat, inner, req({ case: "drain", value: create(DrainSchema, {}) })] }) });
    expect(decodeWorkerMessages(outer).map((m) => m.kind)).toEqual(["heartbeat", "ignored", "drain"]);
  });
});

describe("stepAckMessage", () => {
  it("carries the journal's entry only when it holds another result", () => {
    const plain = stepAckMessage("r", "k:0", 1);
    expect(plain.message.case === "stepAck" && plain.message.value.journaled).toBeUndefined();
    const existing = stepAckMessage("r", "k:0", 1, { stepKey: "k:0", error: { name: "E", message: "m" } });
    const journaled = existing.message.case === "stepAck" ? existing.message.value.journaled : undefined;
    expect(journaled?.result.case).toBe("error");
  });
});
