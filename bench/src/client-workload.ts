import type { Stepwise } from "@stepwise/sdk";
import type { RunWaiter, RunWaiterOptions } from "./run-waiter.js";
import type { Verification } from "./verification.js";

/** What a workload driver gets: the SDK client, run waiters and run numbers. */
export interface ClientContext {
  client: Stepwise;
  /** The waiter of a workload, made with options on first use and kept for its later calls. */
  waiter: (workload: string, options: RunWaiterOptions) => RunWaiter;
  /** A number no earlier run of this process used, so every event's data is unique. */
  nextRun: () => number;
}

/** What a workload measured in the client, and how its runs turned out. */
export interface ClientWorkloadResult {
  /** Named figures, such as runsPerSecond or latencyP50Ms. */
  figures: Record<string, number>;
  verification: Verification;
  /** Reads the client made to learn that runs ended: the load it added to the engine. */
  reads: number;
  /** Send calls the client made. */
  sends: number;
}
