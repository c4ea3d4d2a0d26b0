// The kinds of fault the chaos suite injects, and the bound on how long a
// run in flight at one may wait before its next progress.

export const FAULT_KINDS = [
  "executor-kill",
  "executor-stop",
  "scheduler-kill",
  "ingest-kill",
  "worker-kill",
  "nats-kill",
  "nats-wipe",
  "postgres-restart",
] as const;

/** A kind of fault. */
export type FaultKind = (typeof FAULT_KINDS)[number];

/** How often each kind is drawn, relative to the others: a wiped store is the rarer NATS fault. */
export const FAULT_WEIGHTS: Record<FaultKind, number> = {
  "executor-kill": 1,
  "executor-stop": 1,
  "scheduler-kill": 1,
  "ingest-kill": 1,
  "worker-kill": 1,
  "nats-kill": 1,
  "nats-wipe": 0.4,
  "postgres-restart": 1,
};

/** What each kind does, for the table and the docs. */
export const FAULT_DESCRIPTIONS: Record<FaultKind, string> = {
  "executor-kill": "SIGKILL of an executor, restarted after a short random delay",
  "executor-stop": "SIGSTOP of an executor for longer than the lease, then SIGCONT",
  "scheduler-kill": "SIGKILL of a scheduler, restarted after a short random delay",
  "ingest-kill": "SIGKILL of an ingest, restarted after a short random delay",
  "worker-kill": "SIGKILL of a worker process, a new one started after a short random delay",
  "nats-kill": "kill -9 of a NATS node, restarted after a short random delay",
  "nats-wipe": "kill -9 of a NATS node, its JetStream store deleted, restarted",
  "postgres-restart": "kill -9 of the Postgres postmaster, then started again",
};

/** The bound as a formula of the lease L and the time D the faulted part was down. */
export const BOUND_FORMULAS: Record<FaultKind, string> = {
  "executor-kill": "L + 3 s",
  "executor-stop": "L + 3 s",
  "scheduler-kill": "D + L + 3 s",
  "ingest-kill": "D + L + 3 s",
  "worker-kill": "D + 3 s",
  "nats-kill": "D + 10 s",
  "nats-wipe": "D + 10 s",
  "postgres-restart": "D + L + 5 s",
};

/** The bound in ms, for a lease of leaseMs and a part down for downMs. */
export function recoveryBoundMs(kind: FaultKind, leaseMs: number, downMs: number): number {
  switch (kind) {
    case "executor-kill":
    case "executor-stop":
      return leaseMs + 3_000;
    case "scheduler-kill":
    case "ingest-kill":
      return downMs + leaseMs + 3_000;
    case "worker-kill":
      return downMs + 3_000;
    case "nats-kill":
    case "nats-wipe":
      return downMs + 10_000;
    case "postgres-restart":
      return downMs + leaseMs + 5_000;
  }
}
