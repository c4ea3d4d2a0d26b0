import { pushable, type Pushable } from "it-pushable";
import type { TraceSpan } from "@stepwise/core";
import { TurnBatch, type ConnectResponse } from "@stepwise/proto";
import type { Completion } from "./run-announcer.js";
import { batchMessage } from "./worker-protocol.js";

/** A run an executor holds on a worker. */
export interface HeldRun {
  runId: string;
  functionId: string;
  lease: number;
  /** Id of the event that started the run. */
  eventId: string;
  /** The run's wake-up count at the claim, which a suspension compares. */
  wakes: number;
  /** Attempt number of the handler in this execution. */
  attempt: number;
  /** When the run was given to the worker. */
  startedAtMs: number;
  /**
   * What the announcement of the run's completion carries besides its end
   * time and output; unset when the event's data is too large to carry.
   */
  completion?: Completion | undefined;
  /** The span of this execution (runtime/tracing.ts), ended when the execution is. */
  span?: TraceSpan | undefined;
}

/**
 * One connected worker: its stream, its functions and the runs it holds.
 */
export class WorkerSession {
  /** Messages to the worker, in order. */
  readonly outbox: Pushable<ConnectResponse> = pushable({ objectMode: true });
  /** Runs held, by run id. */
  readonly runs = new Map<string, HeldRun>();
  /** Slots taken by runs being claimed. */
  claiming = 0;
  /** Step and run results being recorded, settled before the session's runs are handed back. */
  readonly pending = new Set<Promise<unknown>>();
  lastSeen = Date.now();
  draining = false;
  closed = false;

  /** Messages of this turn not yet in the outbox, when the worker takes batches. */
  private readonly unsent = new TurnBatch<ConnectResponse>((messages) => {
    if (this.closed) return;
    this.outbox.push(batchMessage(messages));
  });

  /**
   * @param batches the worker takes ResponseBatch: the messages of one turn
   *   of the event loop (the acks of one journal write, the runs of one
   *   claim) go out as one stream message.
   */
  constructor(
    readonly id: string,
    readonly appId: string,
    readonly functions: ReadonlySet<string>,
    readonly capacity: number,
    readonly batches = false,
  ) {}

  /** Slots neither used by a run nor taken by a claim in progress. */
  get free(): number {
    if (this.draining || this.closed) return 0;
    return this.capacity - this.runs.size - this.claiming;
  }

  send(message: ConnectResponse): void {
    if (this.closed) return;
    if (!this.batches) {
      this.outbox.push(message);
      return;
    }
    this.unsent.add(message);
  }

  close(): void {
    if (this.closed) return;
    this.unsent.flushNow();
    this.closed = true;
    this.outbox.end();
  }
}
