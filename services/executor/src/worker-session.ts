import { Code, ConnectError } from "@connectrpc/connect";
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
  /** Steps the run's journal holds: those at the claim, and those journaled since. */
  steps: number;
}

/**
 * What a worker may do before the executor ends its stream with a reason
 * rather than spend memory on it: messages about runs it does not hold (a
 * few follow any cancellation; a stream of them is a broken or hostile
 * worker), results in flight at once, and messages waiting for a worker
 * that does not read its stream.
 */
export const SESSION_LIMITS = {
  /** Messages about runs not held: a budget of this many, refilled at STRAYS_PER_SECOND. */
  strays: 1_000,
  straysPerSecond: 100,
  /** Results being journaled at once, per slot of the worker's capacity (and at least 1,000). */
  pendingPerSlot: 100,
  /** Messages waiting in the outbox for a worker that does not take them. */
  outbox: 100_000,
};

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
  /** Why the executor ended the stream, when it did. */
  endedFor: ConnectError | undefined;
  private strayBudget = SESSION_LIMITS.strays;
  private strayCheckedAt = Date.now();

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
    if (this.outbox.readableLength >= SESSION_LIMITS.outbox) {
      this.end(`the worker does not read its stream: ${SESSION_LIMITS.outbox} messages wait for it`, Code.ResourceExhausted);
      return;
    }
    if (!this.batches) {
      this.outbox.push(message);
      return;
    }
    this.unsent.add(message);
  }

  /**
   * Counts a message about a run this worker does not hold; false (and the
   * stream ended) once the worker has sent too many of them.
   */
  stray(): boolean {
    const now = Date.now();
    this.strayBudget = Math.min(SESSION_LIMITS.strays, this.strayBudget + ((now - this.strayCheckedAt) / 1000) * SESSION_LIMITS.straysPerSecond);
    this.strayCheckedAt = now;
    if (--this.strayBudget >= 0) return true;
    this.end(`the worker sent more than ${SESSION_LIMITS.strays} results for runs it does not hold`, Code.FailedPrecondition);
    return false;
  }

  /** False (and the stream ended) when the worker has more results in flight than its capacity can explain. */
  roomForResult(): boolean {
    const max = Math.max(1_000, this.capacity * SESSION_LIMITS.pendingPerSlot);
    if (this.pending.size < max) return true;
    this.end(`the worker sent more than ${max} results at once without waiting for their acks`, Code.ResourceExhausted);
    return false;
  }

  /** Ends the stream with an error the worker reads as the reason. */
  end(reason: string, code: Code): void {
    if (this.closed) return;
    this.endedFor = new ConnectError(reason, code);
    this.close();
  }

  close(): void {
    if (this.closed) return;
    this.unsent.flushNow();
    this.closed = true;
    if (this.endedFor) this.outbox.end(this.endedFor);
    else this.outbox.end();
  }
}
