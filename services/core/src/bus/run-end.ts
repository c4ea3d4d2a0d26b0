import { create } from "@bufbuild/protobuf";
import { CompletedRunSchema, RunEndSchema, type RunEnd as RunEndMessage } from "@stepwise/proto";
import type { RunEnd } from "./bus.js";

// Run ends as the JetStream bus announces them on <prefix>.ended.

/** A run end as the announcement message carries it. */
export function runEndToProto(r: RunEnd): RunEndMessage {
  const c = r.completed;
  return create(RunEndSchema, {
    runId: r.runId,
    eventId: r.eventId,
    ...(c
      ? {
          completed: create(CompletedRunSchema, {
            ...c,
            eventTsMs: BigInt(c.eventTsMs),
            createdAtMs: BigInt(c.createdAtMs),
            startedAtMs: BigInt(c.startedAtMs),
            endedAtMs: BigInt(c.endedAtMs),
          }),
        }
      : {}),
  });
}

/** A run end from the announcement message. */
export function runEndFromProto(r: RunEndMessage): RunEnd {
  const c = r.completed;
  if (!c) return { runId: r.runId, eventId: r.eventId };
  return {
    runId: r.runId,
    eventId: r.eventId,
    completed: {
      appId: c.appId,
      functionId: c.functionId,
      eventName: c.eventName,
      eventDataJson: c.eventDataJson,
      eventTsMs: Number(c.eventTsMs),
      createdAtMs: Number(c.createdAtMs),
      startedAtMs: Number(c.startedAtMs),
      endedAtMs: Number(c.endedAtMs),
      outputJson: c.outputJson,
      attempts: c.attempts,
      eventRuns: c.eventRuns,
    },
  };
}
