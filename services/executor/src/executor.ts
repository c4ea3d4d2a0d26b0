import { randomUUID } from "node:crypto";
import { Code, ConnectError, type ConnectRouter, type HandlerContext } from "@connectrpc/connect";
import { callerOf, endSpan, quote, startSpanAfter, type Bus, type StoredError, type ClaimedRun, type JournalStore, type Logger, type RunCancel, type ExecutorMetrics, type ServiceMetrics, type Subscription, type TimerStore, type WaitStore } from "@stepwise/core";
import { WorkerService, type ConnectRequest, type ConnectResponse } from "@stepwise/proto";
import { Dispatcher } from "./dispatcher.js";
import { validateRegistration } from "./registration.js";
import { ResultRecorder } from "./result-recorder.js";
import { RunAnnouncer } from "./run-announcer.js";
import { RunQueue } from "./run-queue.js";
import { RunSuspender } from "./run-suspender.js";
import { TaskTracker } from "./task-tracker.js";
import {
  cancelRunMessage,
  decodeWorkerMessages,
  drainMessage,
  heartbeatMessage,
  readRegister,
  registeredMessage,
  startRunMessage,
  stepAckMessage,
  type WorkerMessage,
} from "./worker-protocol.js";
import { WorkerDirectory } from "./worker-directory.js";
import { WorkerRegistry } from "./worker-registry.js";
import { WorkerSession, type HeldRun } from "./worker-session.js";

/** Options of the executor. */
export interface ExecutorOptions {
  store: JournalStore;
  /** Timers and waits of suspended runs. */
  timers: TimerStore;
  waits: WaitStore;
  bus: Bus;
  log: Logger;
  /** How long a claimed run stays held without renewal. */
  leaseMs: number;
  /** When the reconciler publishes a requeued run's work again if the publish below was lost. */
  requeueAfterMs: number;
  /** Heartbeat interval asked of workers; silence for 3 intervals ends a session. */
  heartbeatMs: number;
  /** How long stop() lets workers finish their runs before handing them back. */
  drainTimeoutMs?: number;
  /** When a run waiting in the queue has its work published once more. */
  queuedBackstopMs?: number;
  /** Where the executor's metrics go: step attempts, batch sizes, and the workers, read at each scrape. */
  metrics?: ServiceMetrics | undefined;
  /** Most steps a run's journal may hold; a step past it fails the run (StepLimitExceeded). 10,000 by default. */
  maxStepsPerRun?: number | undefined;
}

/** Most steps a run may have unless configured (STEPWISE_MAX_STEPS_PER_RUN). */
export const DEFAULT_MAX_STEPS_PER_RUN = 10_000;

/**
 * The executor hosts WorkerService.Connect: it registers workers, hands the
 * runs the dispatcher claims to them, journals every step result before
 * acknowledging it (ResultRecorder), records suspensions (RunSuspender) and
 * how runs ended, announces the ends, renews the leases of the runs its
 * workers hold, and hands the runs of a vanished worker back to the queue.
 * What crosses the stream is decoded and encoded by worker-protocol.ts.
 */
export class Executor {
  /** Identifies this process's leases in the runs table. */
  readonly id = randomUUID();
  private readonly registry = new WorkerRegistry();
  private readonly tasks: TaskTracker;
  private renewTimer: NodeJS.Timeout | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private cancellations: Promise<Subscription | undefined> | undefined;
  private stopping = false;
  private readonly sessionsEnding = new Set<Promise<void>>();
  private readonly recorder: ResultRecorder;
  private readonly maxStepsPerRun: number;
  private readonly suspender: RunSuspender;
  private readonly queue: RunQueue;
  private readonly announcer: RunAnnouncer;
  private readonly dispatcher: Dispatcher;
  private readonly stepMetrics: ExecutorMetrics | undefined;
  private readonly unwatchWorkers: (() => void) | undefined;
  /** The connected workers as ListWorkers shows them, written on register, heartbeat and close only. */
  private readonly workers: WorkerDirectory;

  constructor(private readonly options: ExecutorOptions) {
    this.tasks = new TaskTracker(options.log);
    this.maxStepsPerRun = options.maxStepsPerRun ?? DEFAULT_MAX_STEPS_PER_RUN;
    this.workers = new WorkerDirectory(options.store, options.log, this.id, options.heartbeatMs);
    this.recorder = new ResultRecorder(
      options.store,
      options.log,
      options.leaseMs,
      () => this.stopping,
      options.requeueAfterMs,
      options.metrics,
    );
    this.queue = new RunQueue(options);
    this.announcer = new RunAnnouncer(options.bus);
    this.suspender = new RunSuspender({
      store: options.store,
      bus: options.bus,
      timers: options.timers,
      waits: options.waits,
      recorder: this.recorder,
      log: options.log,
      requeueAfterMs: options.requeueAfterMs,
      publish: (runs) => this.queue.publish(runs),
    });
    this.dispatcher = new Dispatcher({
      store: options.store,
      bus: options.bus,
      log: options.log,
      registry: this.registry,
      queue: this.queue,
      executorId: this.id,
      leaseMs: options.leaseMs,
      stopping: () => this.stopping,
      track: (p) => this.tasks.track(p),
      start: (session, claimed) => this.startOn(session, claimed),
      metrics: options.metrics,
    });
    this.stepMetrics = options.metrics?.executor;
    this.unwatchWorkers = this.stepMetrics?.watchWorkers(() =>
      this.registry.all().map((s) => ({ appId: s.appId, capacity: s.capacity, used: s.runs.size + s.claiming })),
    );
  }

  /** Registers WorkerService on a router. */
  routes = (router: ConnectRouter): void => {
    router.service(WorkerService, {
      connect: (requests, ctx) => this.connect(requests, ctx),
    });
  };

  start(): void {
    const renewEvery = Math.max(100, Math.floor(this.options.leaseMs / 3));
    const renew = () => {
      this.dispatcher.keepBacklogs();
      // Only the runs a session still holds: a run dropped on an error path
      // must see its lease lapse so the reconciler hands it on.
      const held = this.registry.all().flatMap((s) => [...s.runs.keys()]);
      if (held.length === 0) return;
      this.tasks.track(
        this.options.store.renewLeases(this.id, held, this.options.leaseMs).catch((err: unknown) => {
          this.options.log.warn({ err }, "renewing run leases failed");
        }),
      );
    };
    this.renewTimer = setInterval(renew, renewEvery);
    this.heartbeatTimer = setInterval(() => {
      this.expireSilentWorkers();
      this.tasks.track(this.workers.heartbeat());
    }, this.options.heartbeatMs);
    this.cancellations = this.options.bus.watchRunsCancelled((runs) => this.onCancelled(runs)).catch((err: unknown) => {
      // Cancelled runs are then stopped by the journal, which refuses their next step result.
      this.options.log.warn({ err }, "watching run cancellations failed");
      return undefined;
    });
  }

  /**
   * Drains: stops taking work, asks workers to finish what they hold, and
   * after drainTimeoutMs hands what is left back to the queue.
   */
  async stop(): Promise<void> {
    this.stopping = true;
    this.unwatchWorkers?.();
    clearInterval(this.renewTimer);
    clearInterval(this.heartbeatTimer);
    await (await this.cancellations)?.stop();
    await this.dispatcher.stop();
    const sessions = this.registry.all();
    for (const s of sessions) {
      s.draining = true;
      s.send(drainMessage("executor shutting down"));
    }
    const deadline = Date.now() + (this.options.drainTimeoutMs ?? 10_000);
    while (Date.now() < deadline && sessions.some((s) => s.runs.size > 0 && !s.closed)) {
      await new Promise((r) => setTimeout(r, 50));
    }
    for (const s of sessions) s.close();
    // Each session's end hands its runs back; wait for that, and for results
    // being recorded, but not for a peer that never hangs up.
    await Promise.race([
      Promise.allSettled([...this.sessionsEnding, ...this.tasks.pending()]),
      new Promise((r) => setTimeout(r, 5_000).unref()),
    ]);
  }

  private async *connect(requests: AsyncIterable<ConnectRequest>, ctx: HandlerContext): AsyncIterable<ConnectResponse> {
    if (this.stopping) throw new ConnectError("executor is shutting down", Code.Unavailable);
    const it = requests[Symbol.asyncIterator]();
    const reg = await readRegister(it, REGISTER_TIMEOUT_MS);
    const functions = validateRegistration(reg);
    // A worker key decides the app: a worker registers as no other, so it never receives another app's runs.
    const app = callerOf(ctx)?.app;
    if (app && app !== reg.appId) {
      throw new ConnectError(`register: app_id ${quote(reg.appId)} is not the app of this worker key`, Code.PermissionDenied);
    }
    try {
      await this.options.store.registerFunctions(reg.appId, functions);
    } catch (err) {
      this.options.log.error({ err, app: reg.appId }, "storing a registration failed");
      throw new ConnectError("the journal is unavailable, connect again", Code.Unavailable);
    }
    const session = new WorkerSession(
      reg.workerId || randomUUID(),
      reg.appId,
      new Set(functions.map((f) => f.id)),
      reg.capacity,
      reg.batches,
    );
    const log = this.options.log.child({ worker: session.id, app: session.appId });
    // Recorded before the worker hears it is registered: a worker that
    // connected is listed (ListWorkers). Only fails into the log.
    await this.workers.add(session, reg.sdk);
    this.registry.add(session);
    log.info({ functions: functions.map((f) => f.id), capacity: reg.capacity }, "worker connected");
    session.send(registeredMessage(session.id, this.options.heartbeatMs, reg.batches));
    const onAbort = () => session.close();
    ctx.signal.addEventListener("abort", onAbort);
    const reader = (async () => {
      const decoded: WorkerMessage[] = [];
      for (;;) {
        const next = await it.next();
        if (next.done) return;
        session.lastSeen = Date.now();
        for (const m of decodeWorkerMessages(next.value, decoded)) this.onMessage(session, m);
        decoded.length = 0;
      }
    })()
      .catch((err: unknown) => log.debug({ err }, "worker stream ended with an error"))
      .finally(() => session.close());
    // Not tracked for stop(): a reader only ends when the peer's side does,
    // which a peer that vanished may never do. What it started is tracked.
    void reader;
    this.dispatcher.fill(session.appId);
    // Registered now, so that stop() closing the session also waits for its hand-back.
    let ended!: () => void;
    const ending = new Promise<void>((r) => (ended = r));
    this.sessionsEnding.add(ending);
    try {
      for await (const msg of session.outbox) yield msg;
    } finally {
      ctx.signal.removeEventListener("abort", onAbort);
      session.close();
      this.registry.remove(session);
      this.tasks.track(this.workers.remove(session));
      // Best effort: the reader ends when the peer's side does (its request
      // stream ends, the client aborts, or the HTTP/2 keepalive drops it).
      void Promise.resolve(it.return?.()).catch(() => {});
      try {
        // Results that arrived before the stream ended are recorded first: a
        // run the worker finished is completed, not handed back.
        await Promise.allSettled([...session.pending]);
        log.info({ runs: session.runs.size }, "worker disconnected");
        await this.handBack(session);
      } finally {
        ended();
        this.sessionsEnding.delete(ending);
      }
    }
  }

  private onMessage(session: WorkerSession, m: WorkerMessage): void {
    if ("runId" in m || m.kind === "step" || m.kind === "attempt") {
      const runId = m.kind === "step" ? m.step.runId : m.kind === "attempt" ? m.attempt.runId : m.runId;
      const lease = m.kind === "step" ? m.step.lease : m.kind === "attempt" ? m.attempt.lease : m.lease;
      if (session.runs.get(runId)?.lease !== lease) {
        // A result for a run this worker no longer holds (cancelled, or its
        // lease lost): the worker is told to drop it. Many of them end the stream.
        if (session.stray()) session.send(cancelRunMessage(runId, lease, "the run is no longer held by this worker"));
        return;
      }
      if (!session.roomForResult()) return;
    }
    switch (m.kind) {
      case "step":
      case "attempt":
        this.tasks.trackFor(session, this.onStepResult(session, m));
        return;
      case "run-ended":
      case "run-retry":
        this.tasks.trackFor(session, this.onRunResult(session, m));
        return;
      case "suspend":
        this.tasks.trackFor(session, this.onSuspend(session, m));
        return;
      case "heartbeat":
        session.send(heartbeatMessage());
        return;
      case "drain":
        session.draining = true;
        return;
      case "register-again":
        session.end("register: sent again; a stream registers once, as its first message", Code.InvalidArgument);
        return;
      case "ignored":
        return;
    }
  }

  private async onStepResult(session: WorkerSession, m: WorkerMessage & { kind: "step" | "attempt" }): Promise<void> {
    const r = m.kind === "step" ? m.step : m.attempt;
    const held = session.runs.get(r.runId);
    if (!held || held.lease !== r.lease) {
      session.send(cancelRunMessage(r.runId, r.lease, "the run is no longer held by this worker"));
      return;
    }
    if (m.kind === "step" && held.steps >= this.maxStepsPerRun) {
      await this.failHeld(session, held, {
        name: "StepLimitExceeded",
        message: `the run has ${held.steps} steps, the most a run may have (STEPWISE_MAX_STEPS_PER_RUN is ${this.maxStepsPerRun}); step ${quote(r.stepId)} was not journaled`,
      });
      return;
    }
    if (m.kind === "attempt") {
      // A failed attempt to be retried: journaled as an attempt; the step
      // has no result yet and the worker suspends the run until retryAt.
      if (!(await this.recorder.recordAttempt(m.attempt))) {
        this.dropRun(session, r.runId, r.lease, "the run's lease was lost");
        return;
      }
      this.stepMetrics?.stepJournaled(session.appId, held.functionId, "retried", (r.endedAtMs - r.startedAtMs) / 1000);
      session.send(stepAckMessage(r.runId, r.stepKey, r.lease));
      return;
    }
    const outcome = await this.recorder.recordStep(m.step);
    if (outcome.kind === "lease-lost") {
      // Journal unreachable past the lease, or another execution took over:
      // this one must not proceed. The lease lapses (it is no longer renewed)
      // and the reconciler hands the run on.
      this.dropRun(session, r.runId, r.lease, "the run's lease was lost");
      return;
    }
    if (outcome.kind === "journaled") {
      held.steps++;
      this.stepMetrics?.stepJournaled(session.appId, held.functionId, m.step.error ? "failed" : "succeeded", (r.endedAtMs - r.startedAtMs) / 1000);
    }
    session.send(stepAckMessage(r.runId, r.stepKey, r.lease, outcome.kind === "existing" ? outcome.entry : undefined));
  }

  private async onRunResult(session: WorkerSession, m: WorkerMessage & { kind: "run-ended" | "run-retry" }): Promise<void> {
    const held = session.runs.get(m.runId);
    if (!held || held.lease !== m.lease) return;
    if (m.kind === "run-retry") {
      // The handler failed outside any step and will be retried: the
      // attempt is journaled and the run waits for its retry time.
      const ok = await this.recorder.recordAttempt({
        runId: m.runId,
        lease: m.lease,
        stepKey: "",
        stepId: "",
        attempt: held.attempt,
        startedAtMs: held.startedAtMs,
        endedAtMs: Date.now(),
        error: m.error,
        retryAtMs: m.retryAtMs,
      });
      if (ok) await this.suspender.suspend(held, [{ stepKey: "", stepId: "", kind: "retry", dueAtMs: m.retryAtMs }]);
      this.release(session, m.runId, m.lease);
      return;
    }
    const { ended, completedAtMs, queued } = await this.recorder.recordEnd(m.runId, m.lease, m.end);
    this.release(session, m.runId, m.lease);
    if (ended) {
      const outputJson = m.end.kind === "completed" ? m.end.outputJson : undefined;
      this.announcer.announce(m.runId, held.eventId, held.completion, completedAtMs, outputJson);
    }
    // The onFailure run, and the runs that invoked this one, woken by its end.
    await this.queue.publish(queued);
  }

  /** A run waits: its timers and waits are recorded, then its slot is freed. */
  private async onSuspend(session: WorkerSession, m: WorkerMessage & { kind: "suspend" }): Promise<void> {
    const held = session.runs.get(m.runId);
    if (!held || held.lease !== m.lease) return;
    let outcome: Awaited<ReturnType<RunSuspender["onSuspend"]>> = "suspended";
    try {
      outcome = await this.suspender.onSuspend(held, m.suspension);
    } finally {
      // Whatever happened, this execution is over: its slot is free.
      this.release(session, m.runId, m.lease);
    }
    if (outcome === "requeue") {
      await this.queue.requeue(m.runId, m.lease, session.appId, held.functionId);
    } else if (outcome !== "suspended") {
      await this.failRun(held, outcome);
    }
  }

  /** Fails a run this execution holds (it cannot go on), and tells its worker to drop it. */
  private async failHeld(session: WorkerSession, held: HeldRun, error: StoredError): Promise<void> {
    this.dropRun(session, held.runId, held.lease, error.message);
    await this.failRun(held, error);
  }

  /** Ends a run as failed in the journal, announces it, and queues what its end wakes (its onFailure run, its callers). */
  private async failRun(held: HeldRun, error: StoredError): Promise<void> {
    const failed = await this.recorder.retrying(() => this.options.store.failRun(held.runId, held.lease, error, this.options.requeueAfterMs));
    if (failed?.ok) this.announcer.announce(held.runId, held.eventId);
    if (failed) await this.queue.publish(failed.failureRun ? [failed.failureRun, ...failed.wokenRuns] : failed.wokenRuns);
  }

  /** Runs cancelled while this executor held them: their workers drop them, their slots free up. */
  private onCancelled(runs: RunCancel[]): void {
    const mine = runs.filter((r) => r.executorId === this.id);
    if (mine.length === 0) return;
    const sessions = this.registry.all();
    for (const r of mine) {
      for (const session of sessions) {
        if (session.runs.get(r.runId)?.lease === r.lease) this.dropRun(session, r.runId, r.lease, r.reason);
      }
    }
  }

  /** This execution of a run must stop: its slot is freed and the worker told to drop it. */
  private dropRun(session: WorkerSession, runId: string, lease: number, reason: string): void {
    this.release(session, runId, lease, reason);
    session.send(cancelRunMessage(runId, lease, reason));
  }

  /** Frees the slot of one execution of a run; a newer execution of the run keeps its slot. */
  private release(session: WorkerSession, runId: string, lease: number, error?: string): void {
    const held = session.runs.get(runId);
    if (held?.lease !== lease) return;
    if (held.span) endSpan(held.span, error);
    session.runs.delete(runId);
    this.dispatcher.fill(session.appId);
  }

  /** Gives a run claimed for a session to its worker. */
  private startOn(session: WorkerSession, claimed: ClaimedRun): void {
    // The execution's span, after the span of the run's event; the worker's step spans follow it.
    const traced = startSpanAfter(`stepwise.run ${claimed.functionId}`, claimed.traceParent, {
      "stepwise.run.id": claimed.runId,
      "stepwise.app.id": claimed.appId,
      "stepwise.function.id": claimed.functionId,
      "stepwise.run.lease": claimed.lease,
    });
    session.runs.set(claimed.runId, {
      runId: claimed.runId,
      functionId: claimed.functionId,
      lease: claimed.lease,
      eventId: claimed.event.id,
      wakes: claimed.wakes,
      attempt: claimed.attempt,
      startedAtMs: Date.now(),
      completion: this.announcer.completionOf(claimed),
      span: traced.span,
      steps: claimed.journal.length,
    });
    session.send(startRunMessage(claimed, traced.traceParent));
  }

  /** Hands the runs of a session that ended back to the queue. */
  private async handBack(session: WorkerSession): Promise<void> {
    const runs = [...session.runs.values()];
    session.runs.clear();
    for (const r of runs) if (r.span) endSpan(r.span, "the worker went away: handed back to the queue");
    await Promise.all(runs.map((r) => this.queue.requeue(r.runId, r.lease, session.appId, r.functionId)));
    if (!this.stopping) this.dispatcher.fill(session.appId);
  }

  private expireSilentWorkers(): void {
    const limit = Date.now() - 3 * this.options.heartbeatMs;
    for (const s of this.registry.all()) {
      if (s.lastSeen < limit) {
        this.options.log.warn({ worker: s.id }, "worker missed its heartbeats");
        // Ended with the reason, not a bare OK: the worker reconnects knowing why.
        s.end(`no message from the worker for three heartbeat intervals (${3 * this.options.heartbeatMs} ms)`, Code.DeadlineExceeded);
      }
    }
  }
}

/** Most a worker may take between opening the stream and registering. */
const REGISTER_TIMEOUT_MS = 10_000;
