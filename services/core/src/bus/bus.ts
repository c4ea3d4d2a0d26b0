import type { EventRecord, RunWork } from "@stepwise/proto";

/** A delivered message. Settle it exactly once with ack or nak. */
export interface Delivery<T> {
  readonly data: T;
  /** 1 on first delivery, more on redeliveries. */
  readonly deliveryCount: number;
  /** Done with it: it is not delivered again. */
  ack(): void;
  /** Not done: deliver it again after delayMs (0 or omitted: soon). */
  nak(delayMs?: number): void;
  /** Still being handled: restarts the time after which an unsettled delivery is redelivered. */
  working(): void;
}

/** A running consumer; stop() ends it and waits for handlers in progress. */
export interface Subscription {
  stop(): Promise<void>;
}

/** Options of the durable event consumer. */
export interface ConsumeEventsOptions {
  /** How many events are handled at once. */
  concurrency: number;
}

/**
 * Bus moves events and run work between the services. JetStream implements
 * it for real deployments and an in-process queue for `stepwise dev`; both
 * pass the same behavioural tests (bus.test.ts).
 *
 * Events are deduplicated by id and delivered at least once to the durable
 * consumer of the schedulers. Run work is a queue per app (subjects per app
 * and function) from which executors pull only as many messages as their
 * workers of that app have free slots.
 */
export interface Bus {
  /**
   * Publishes events, each deduplicated by its id, and resolves once all are
   * durably stored. Rejects if any was not.
   */
  publishEvents(records: readonly EventRecord[]): Promise<void>;
  /**
   * Starts the durable, shared event consumer. A handler that resolves acks
   * its event; one that throws gets it redelivered after a delay.
   */
  consumeEvents(
    handler: (record: EventRecord, delivery: Delivery<EventRecord>) => Promise<void>,
    options: ConsumeEventsOptions,
  ): Promise<Subscription>;
  /** Publishes run work (see workMessages) and resolves once all of it is stored. */
  publishWork(work: readonly RunWork[]): Promise<void>;
  /**
   * Pulls at most max work messages of one app, yielding each as it
   * arrives; ends once max arrived, after expiresMs (JetStream's floor is
   * 1 s), or when signal aborts.
   */
  pullWork(
    appId: string,
    max: number,
    expiresMs: number,
    signal: AbortSignal,
  ): AsyncIterable<Delivery<RunWork>>;
  /**
   * Announces runs that ended, to every watcher, at most once and without
   * waiting: a lost announcement only delays a waiter to its next check.
   */
  announceRunsEnded(runs: readonly RunEnd[]): void;
  /** Calls onEnded with every announcement of every executor until stopped. */
  watchRunsEnded(onEnded: (runs: RunEnd[]) => void): Promise<Subscription>;
  /**
   * Tells executors that runs they held were cancelled, at most once and
   * without waiting: a lost message leaves the journal to stop the run (it
   * refuses the run's next step result).
   */
  announceRunsCancelled(runs: readonly RunCancel[]): void;
  /** Calls onCancelled with every cancellation announced until stopped. */
  watchRunsCancelled(onCancelled: (runs: RunCancel[]) => void): Promise<Subscription>;
  /** Closes the bus; pending pulls end. */
  close(): Promise<void>;
}

/** A run cancelled while an executor held it, as announced. */
export interface RunCancel {
  runId: string;
  /** The executor that held it. */
  executorId: string;
  /** The lease of the cancelled execution. */
  lease: number;
  reason: string;
}

/** A run that ended, as announced. */
export interface RunEnd {
  runId: string;
  eventId: string;
  /** The run, when it completed and the executor sends it along; waiters then need not read it. */
  completed?: CompletedRun | undefined;
}

/** A completed run as the executor that held it knows it: RunService's view without steps. */
export interface CompletedRun {
  appId: string;
  functionId: string;
  eventName: string;
  eventDataJson: string;
  eventTsMs: number;
  createdAtMs: number;
  startedAtMs: number;
  endedAtMs: number;
  outputJson: string;
  attempts: number;
  /** How many runs the event had started when this one was claimed (all of them). */
  eventRuns: number;
}

/** Redelivery delay after a failed handling: 250 ms doubling to 10 s. */
export function backoffMs(deliveryCount: number): number {
  return Math.min(10_000, 250 * 2 ** Math.max(0, deliveryCount - 1));
}
