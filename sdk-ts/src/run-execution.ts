import { createHash } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import {
  AwaitSchema,
  ConnectRequestSchema,
  errorToDetail,
  MAX_EVENT_NAME_LENGTH,
  RetrySchema,
  RunResultSchema,
  SleepSchema,
  StepResultSchema,
  SuspendSchema,
  WaitForEventSchema,
  type Await,
  type ConnectRequest,
  type RunEvent,
  type StartRun,
  type StepAck,
} from "@stepwise/proto";
import { type Duration, MAX_DURATION_MS, parseDuration } from "./duration.js";
import { NonRetriableError, RunAbortedError, serializeError } from "./errors.js";
import { matchCondition } from "./event-match.js";
import type { ReceivedEvent, StepwiseFunction } from "./function.js";
import { checkRetries, nextAttemptAt, retryPolicy, type RetryPolicy } from "./retry-policy.js";
import { inStepSpan } from "./tracing.js";
import { encodeOutput, fromJournalEntry, type Outcome, settle } from "./step-outcome.js";
import type { InvokeOptions, SentEvent, StepContext, StepId, StepTools, WaitForEventOptions } from "./step-tools.js";
import { StepwiseError } from "./stepwise-error.js";
import { invokeAwait } from "./invocation.js";




/** A suspension the run will send once no step is executing. */
type PendingAwait = Omit<Await, "$typeName"> & { stepKey: string };

const SUSPENDED = Symbol("suspended");

/** A retry that comes this much before its time is run anyway: timers fire a little early or late. */
const RETRY_EARLY_TOLERANCE_MS = 50;

/** A promise that never settles: what a parked step or wait returns to a handler that is about to be dropped. */
const PARKED = new Promise<never>(() => {});

/**
 * One execution of a run on a worker. Journaled steps return their recorded
 * outcome; new ones run, and their outcome is sent and awaited until the
 * executor acknowledges it is committed. The handler stays in memory across
 * steps: nothing is replayed while the run keeps its slot.
 *
 * A sleep, a wait for an event, an invoked run or a step waiting for its
 * next attempt parks its branch of the handler. Once no step is executing any more, the run
 * suspends: the awaits are sent, the handler is dropped, and a later
 * execution replays the journal up to them.
 */
export class RunExecution {
  private readonly journal = new Map<string, Outcome>();
  private readonly occurrences = new Map<string, number>();
  private readonly acks = new Map<string, { resolve: (a: StepAck) => void; reject: (e: Error) => void }>();
  private readonly awaits = new Map<string, PendingAwait>();
  private readonly policy: RetryPolicy;
  private executing = 0;
  private suspendCheck: NodeJS.Immediate | undefined;
  private suspended: (() => void) | undefined;
  private finished = false;
  private suspendedNow = false;
  private aborted: RunAbortedError | undefined;
  /** Aborts the signal step bodies get, with the RunAbortedError, when the run is taken away. */
  private readonly abortController = new AbortController();

  constructor(
    private readonly start: StartRun,
    private readonly fn: StepwiseFunction,
    private readonly send: (msg: ConnectRequest) => void,
  ) {
    for (const e of start.journal) this.journal.set(e.stepKey, fromJournalEntry(e));
    this.policy = retryPolicy(`function ${fn.config.id}`, fn.config.retries, fn.config.backoff);
  }

  get runId(): string {
    return this.start.runId;
  }

  /** The lease of this execution; messages for another lease are not for it. */
  get lease(): number {
    return this.start.lease;
  }

  /** Attempt number of the handler in this execution. */
  private get attempt(): number {
    return Math.max(1, this.start.attempt);
  }

  /** Runs the handler to its end, or to a suspension, and reports it, unless aborted first. */
  async execute(): Promise<void> {
    const suspended = new Promise<typeof SUSPENDED>((resolve) => (this.suspended = () => resolve(SUSPENDED)));
    let outcome: Outcome;
    let retryAtMs: number | undefined;
    try {
      const event = this.fn.parseEvent(receivedEvent(this.start.event));
      // A debounced or batched run has all its events; `event` is one of them.
      const events = this.start.events.map((e) => (e.id === event.id ? event : this.fn.parseEvent(receivedEvent(e))));
      const handler = Promise.resolve(
        this.fn.handler({ event, events: events.length > 0 ? events : [event], step: this.tools(), runId: this.start.runId }),
      );
      // The handler of a suspended run is dropped; whatever it does later is ignored.
      handler.catch(() => {});
      const value = await Promise.race([handler, suspended]);
      if (value === SUSPENDED) return;
      outcome = encodeOutput(value, "the handler's return value");
    } catch (err) {
      if (this.suspendedNow) return;
      outcome = { error: serializeError(err) };
      retryAtMs = nextAttemptAt(this.policy, this.policy.retries, this.attempt, err, Date.now());
    }
    if (this.aborted || this.suspendedNow) return;
    this.finished = true;
    this.send(
      create(ConnectRequestSchema, {
        message: {
          case: "runResult",
          value: create(RunResultSchema, {
            runId: this.start.runId,
            lease: this.start.lease,
            result:
              "error" in outcome
                ? { case: "error", value: errorToDetail(outcome.error) }
                : { case: "outputJson", value: outcome.outputJson },
            ...(retryAtMs !== undefined && "error" in outcome ? { retryAt: timestampFromMs(retryAtMs) } : {}),
          }),
        },
      }),
    );
  }

  /** Delivers the executor's acknowledgement of a step. */
  onAck(ack: StepAck): void {
    const waiter = this.acks.get(ack.stepKey);
    if (!waiter) return;
    this.acks.delete(ack.stepKey);
    waiter.resolve(ack);
  }

  /** Takes the run away: steps awaiting an ack fail, and no result is sent. */
  abort(reason: string): void {
    if (this.aborted) return;
    this.aborted = new RunAbortedError(reason);
    this.abortController.abort(this.aborted);
    for (const w of this.acks.values()) w.reject(this.aborted);
    this.acks.clear();
    if (this.suspendCheck) clearImmediate(this.suspendCheck);
  }

  private tools(): StepTools {
    return {
      run: (id, fn) => this.runStep(id, fn) as never,
      sendEvent: (id, events) => this.sendEvent(id, events),
      sleep: (id, duration) => this.sleep(id, duration),
      sleepUntil: (id, until) => this.sleepUntil(id, until),
      waitForEvent: (id, options) => this.waitForEvent(id, options),
      invoke: (id: string, options: InvokeOptions) => this.invoke(id, options) as never,
    };
  }

  /** step.sendEvent: a step whose body sends the events with ids derived from the run and the step. */
  private sendEvent(id: StepId, events: SentEvent | readonly SentEvent[]): Promise<string[]> {
    const list: readonly SentEvent[] = Array.isArray(events) ? events : [events as SentEvent];
    const send = this.fn.sendEvents;
    return this.runStep(id, async ({ runId, stepKey }) => {
      if (!send) throw new NonRetriableError("step.sendEvent needs a function defined with stepwise.createFunction");
      if (list.length === 0) return [];
      const digest = createHash("sha256").update(stepKey).digest("hex").slice(0, 16);
      try {
        return await send(list.map((e, i) => ({ ...e, id: e.id ?? `${runId}-${digest}-${i}` })));
      } catch (err) {
        if (err instanceof StepwiseError && err.code === "invalid_argument") throw new NonRetriableError(err.message, { cause: err });
        throw err;
      }
    }) as Promise<string[]>;
  }

  private nextKey(id: string): string {
    const n = this.occurrences.get(id) ?? 0;
    this.occurrences.set(id, n + 1);
    return `${id}:${n}`;
  }

  private async runStep(idOrOptions: StepId, fn: (ctx: StepContext) => unknown): Promise<unknown> {
    const opts = typeof idOrOptions === "string" ? { id: idOrOptions } : idOrOptions;
    const id = opts?.id;
    if (typeof id !== "string" || id.length === 0) throw new NonRetriableError("step.run needs a non-empty id");
    if (opts.retries !== undefined) {
      try {
        checkRetries(opts.retries, `step ${JSON.stringify(id)}: retries`);
      } catch (err) {
        throw new NonRetriableError((err as Error).message);
      }
    }
    const retries = opts.retries ?? this.policy.retries;
    const key = this.nextKey(id);
    const recorded = this.journal.get(key);
    if (recorded) return settle(id, recorded);
    if (this.aborted) throw this.aborted;

    const attempt = (this.start.stepAttempts[key] ?? 0) + 1;
    const due = this.start.retryAt[key];
    if (attempt > 1 && due && timestampMs(due) > Date.now() + RETRY_EARLY_TOLERANCE_MS) {
      // The run woke for another await before this step's retry time: wait for it again.
      return this.park({ stepKey: key, stepId: id, kind: { case: "retry", value: create(RetrySchema, { retryAt: due }) } });
    }
    this.executing++;
    try {
      const startedAt = Date.now();
      let outcome: Outcome;
      let retryAtMs: number | undefined;
      try {
        const ctx = { signal: this.abortController.signal, runId: this.start.runId, stepKey: key };
        const attributes = { "stepwise.run.id": this.start.runId, "stepwise.step.key": key, "stepwise.step.attempt": attempt };
        const value = await inStepSpan(this.start.traceParent, `stepwise.step ${id}`, attributes, async () => fn(ctx));
        outcome = encodeOutput(value, `the output of step ${JSON.stringify(id)}`);
      } catch (err) {
        outcome = { error: serializeError(err) };
        retryAtMs = nextAttemptAt(this.policy, retries, attempt, err, Date.now());
      }
      if (this.aborted) throw this.aborted;
      const endedAt = Date.now();
      const acked = new Promise<StepAck>((resolve, reject) => this.acks.set(key, { resolve, reject }));
      this.send(
        create(ConnectRequestSchema, {
          message: {
            case: "stepResult",
            value: create(StepResultSchema, {
              runId: this.start.runId,
              lease: this.start.lease,
              stepKey: key,
              stepId: id,
              attempt,
              startedAt: timestampFromMs(startedAt),
              endedAt: timestampFromMs(endedAt),
              result:
                "error" in outcome
                  ? { case: "error", value: errorToDetail(outcome.error) }
                  : { case: "outputJson", value: outcome.outputJson },
              ...(retryAtMs !== undefined ? { retryAt: timestampFromMs(retryAtMs) } : {}),
            }),
          },
        }),
      );
      const ack = await acked;
      if (retryAtMs !== undefined && !ack.journaled) {
        // The failed attempt is journaled; the next one runs in a later
        // execution, once the retry time has come.
        return this.park({ stepKey: key, stepId: id, kind: { case: "retry", value: create(RetrySchema, { retryAt: timestampFromMs(retryAtMs) }) } });
      }
      // An earlier execution journaled this step first: its result is the one
      // that counts, so every execution proceeds on the same value.
      const final = ack.journaled ? fromJournalEntry(ack.journaled) : outcome;
      this.journal.set(key, final);
      return settle(id, final);
    } finally {
      this.executing--;
      this.scheduleSuspendCheck();
    }
  }

  private async sleep(id: string, duration: Duration): Promise<void> {
    const key = this.stepKey(id, "step.sleep");
    if (this.journal.has(key)) return void settle(id, this.journal.get(key)!);
    const ms = this.guard(() => parseDuration(duration, `step.sleep ${JSON.stringify(id)}: duration`));
    return this.park({ stepKey: key, stepId: id, kind: { case: "sleep", value: create(SleepSchema, { wakeAt: timestampFromMs(Date.now() + ms) }) } });
  }

  private async sleepUntil(id: string, until: Date | string): Promise<void> {
    const key = this.stepKey(id, "step.sleepUntil");
    if (this.journal.has(key)) return void settle(id, this.journal.get(key)!);
    const at = this.guard(() => {
      const t = until instanceof Date ? until.getTime() : typeof until === "string" ? Date.parse(until) : NaN;
      if (Number.isNaN(t)) throw new TypeError(`step.sleepUntil ${JSON.stringify(id)}: ${String(until)} is not a date`);
      if (t > Date.now() + MAX_DURATION_MS) throw new TypeError(`step.sleepUntil ${JSON.stringify(id)}: more than one year away`);
      return t;
    });
    return this.park({ stepKey: key, stepId: id, kind: { case: "sleep", value: create(SleepSchema, { wakeAt: timestampFromMs(at) }) } });
  }

  private async waitForEvent(id: string, options: WaitForEventOptions): Promise<ReceivedEvent | null> {
    const key = this.stepKey(id, "step.waitForEvent");
    const recorded = this.journal.get(key);
    if (recorded) {
      const value = settle(id, recorded) as { id: string; name: string; data: Record<string, unknown>; ts: string } | null;
      return value === null ? null : { id: value.id, name: value.name, data: value.data, ts: new Date(value.ts) };
    }
    const where = `step.waitForEvent ${JSON.stringify(id)}`;
    const { timeoutMs, condition } = this.guard(() => {
      if (typeof options?.event !== "string" || options.event.length === 0 || options.event.length > MAX_EVENT_NAME_LENGTH) {
        throw new TypeError(`${where}: event must be an event name of 1-${MAX_EVENT_NAME_LENGTH} characters`);
      }
      return {
        timeoutMs: parseDuration(options.timeout, `${where}: timeout`),
        condition: matchCondition(where, options),
      };
    });
    return this.park({
      stepKey: key,
      stepId: id,
      kind: {
        case: "waitForEvent",
        value: create(WaitForEventSchema, { event: options.event, condition, timeoutAt: timestampFromMs(Date.now() + timeoutMs) }),
      },
    });
  }

  /** step.invoke: journaled, the invoked run's output (or its StepError); otherwise the run suspends until it ends. */
  private async invoke(id: string, options: InvokeOptions): Promise<unknown> {
    const key = this.stepKey(id, "step.invoke");
    const recorded = this.journal.get(key);
    if (recorded) return settle(id, recorded);
    const invoke = this.guard(() => invokeAwait(id, options, this.fn.appId, Date.now()));
    return this.park({ stepKey: key, stepId: id, kind: { case: "invoke", value: invoke } });
  }

  private stepKey(id: string, what: string): string {
    if (typeof id !== "string" || id.length === 0) throw new NonRetriableError(`${what} needs a non-empty id`);
    return this.nextKey(id);
  }

  /** Runs a validation; a bad argument is a bug in the handler, which retrying cannot fix. */
  private guard<T>(check: () => T): T {
    try {
      return check();
    } catch (err) {
      throw new NonRetriableError((err as Error).message);
    }
  }

  /** Records what this branch of the handler waits for, and parks it for good. */
  private park(a: PendingAwait): Promise<never> {
    if (this.aborted) throw this.aborted;
    this.awaits.set(a.stepKey, a);
    this.scheduleSuspendCheck();
    return PARKED;
  }

  /**
   * Suspends once nothing executes: checked after the handler's
   * continuations ran (setImmediate), so a branch that goes on to another
   * step keeps the run going.
   */
  private scheduleSuspendCheck(): void {
    if (this.suspendCheck || this.awaits.size === 0) return;
    this.suspendCheck = setImmediate(() => {
      this.suspendCheck = undefined;
      if (this.executing > 0 || this.awaits.size === 0 || this.aborted || this.finished || this.suspendedNow) return;
      this.suspendedNow = true;
      this.send(
        create(ConnectRequestSchema, {
          message: {
            case: "suspend",
            value: create(SuspendSchema, {
              runId: this.start.runId,
              lease: this.start.lease,
              awaits: [...this.awaits.values()].map((a) => create(AwaitSchema, a)),
            }),
          },
        }),
      );
      this.suspended?.();
    });
  }
}

/** An event of StartRun as a handler receives it, before its schema parses it. */
function receivedEvent(ev: RunEvent | undefined): ReceivedEvent {
  return {
    id: ev?.id ?? "",
    name: ev?.name ?? "",
    data: JSON.parse(ev?.dataJson || "{}") as Record<string, unknown>,
    ts: new Date(ev?.ts ? timestampMs(ev.ts) : 0),
  };
}
