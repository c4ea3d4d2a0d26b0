import { RunStatus } from "../gen/stepwise/v1/run_pb.js";

/** Every status a run can have, in the order of its life. */
export const RUN_STATUSES = ["QUEUED", "RUNNING", "WAITING", "COMPLETED", "FAILED", "CANCELLED", "SKIPPED"] as const;

/**
 * Where a run is in its life, by name: what the journal stores, what the
 * SDK reports, and the names of the contract's RunStatus values without
 * their `RUN_STATUS_` prefix.
 */
export type RunStatusName = (typeof RUN_STATUSES)[number];

/** The statuses in which a run has ended for good. */
export const ENDED_RUN_STATUSES: ReadonlySet<RunStatusName> = new Set(["COMPLETED", "FAILED", "CANCELLED", "SKIPPED"]);

const TO_PROTO: Record<RunStatusName, RunStatus> = {
  QUEUED: RunStatus.QUEUED,
  RUNNING: RunStatus.RUNNING,
  WAITING: RunStatus.WAITING,
  COMPLETED: RunStatus.COMPLETED,
  FAILED: RunStatus.FAILED,
  CANCELLED: RunStatus.CANCELLED,
  SKIPPED: RunStatus.SKIPPED,
};

const FROM_PROTO = new Map<RunStatus, RunStatusName>(RUN_STATUSES.map((s) => [TO_PROTO[s], s]));

/** A status name as the contract's enum value. */
export function runStatusToProto(status: RunStatusName): RunStatus {
  return TO_PROTO[status];
}

/** The contract's enum value as a status name; undefined for RUN_STATUS_UNSPECIFIED or a value this version does not know. */
export function runStatusFromProto(status: RunStatus): RunStatusName | undefined {
  return FROM_PROTO.get(status);
}
