import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ConnectRouter, type HandlerContext } from "@connectrpc/connect";
import {
  type Bus,
  type ClaimedRun,
  type Delivery,
  type JournalStore,
  type Logger,
  type PublishedRunRef,
  type CompletedRun,
  type RunEnd,
  type TimerStore,
  type WaitStore,
  workMessages,
  workRunIds,
} from "@stepwise/core";
import { errorFromDetail, MAX_SUSPEND_MS } from "@stepwise/proto";
import {
  CancelRunSchema,
  ConnectResponseSchema,
  DrainSchema,
  HeartbeatSchema,
  RegisteredSchema,
  RunEventSchema,
  StartRunSchema,
  StepAckSchema,
  WorkerService,
  type ConnectRequest,
  type ConnectResponse,
  type RunResult,
  type RunWork,
  type StepResult,
  type Suspend,
} from "@stepwise/proto";
import { validateRegistration } from "./registration.js";
import { ResultRecorder, toProtoEntry } from "./result-recorder.js";
import { GroupCommit } from "@stepwise/core";
import { RunSuspender } from "./run-suspender.js";
import { WorkPuller } from "./work-puller.js";
import { WorkerRegistry } from "./worker-registry.js";
import { WorkerSession } from "./worker-session.js";

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
}

/**
 * The executor hosts WorkerService.Connect. It pulls run work only for apps
 * it has workers with free slots for, claims each run in Postgres (a lease
 * that fences older executions), streams it to a worker with its journal,
 * journals every step result before acknowledging it, records how the run
 * ended, and hands the runs of a vanished worker back to the queue.
 */
export class Executor {
  /** Identifies this process's leases in the runs table. */
  readonly id = randomUUID();
  private readonly registry = new WorkerRegistry();
  private readonly pullers = new Map<string, WorkPuller>();
  private readonly tasks = new Set<Promise<unknown>>();
  private renewTimer: NodeJS.Timeout | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private stopping = false;
  private readonly sessionsEnding = new Set<Promise<void>>();
  private readonly recorder: ResultRecorder;
  private readonly claims: GroupCommit<string, ClaimedRun | null>;
  private readonly suspender: RunSuspender;
  private readonly ended: RunEnd[] = [];
  /** Runs pulled but not yet claimed, by app, in the order their messages came. */
  private readonly backlogs = new Map<string, BacklogEntry[]>();

  constructor(private readonly options: ExecutorOptions) {
    this.recorder = new ResultRecorder(
      options.store,
      options.log,
      options.leaseMs,
      () => this.stopping,
      options.requeueAfterMs,
    );
    this.suspender = new RunSuspender({
      timers: options.timers,
      waits: options.waits,
      recorder: this.recorder,
      log: options.log,
      requeueAfterMs: options.requeueAfterMs,
      publish: (runs) => this.publish(runs),
    });
    // Runs delivered together are claimed together, in one statement.
    this.claims = new GroupCommit(
      (ids) => options.store.claimRuns(ids, this.id, options.leaseMs),
      (id) => options.store.claimRun(id, this.id, options.leaseMs),
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
      // Messages still waiting in a backlog for a slot are not redelivered meanwhile.
      for (const q of this.backlogs.values()) for (const entry of q) entry.delivery.working();
      // Only the runs a session still holds: a run dropped on an error path
      // must see its lease lapse so the reconciler hands it on.
      const held = this.registry.all().flatMap((s) => [...s.runs.keys()]);
      if (held.length === 0) return;
      this.track(
        this.options.store.renewLeases(this.id, held, this.options.leaseMs).catch((err: unknown) => {
          this.options.log.warn({ err }, "renewing run leases failed");
        }),
      );
    };
    this.renewTimer = setInterval(renew, renewEvery);
    this.heartbeatTimer = setInterval(() => this.expireSilentWorkers(), this.options.heartbeatMs);
  }

  /**
   * Drains: stops taking work, asks workers to finish what they hold, and
   * after drainTimeoutMs hands what is left back to the queue.
   */
  async stop(): Promise<void> {
    this.stopping = true;
    clearInterval(this.renewTimer);
    clearInterval(this.heartbeatTimer);
    await Promise.all([...this.pullers.values()].map((p) => p.stop()));
    // Runs pulled but not claimed go back: their message is redelivered to
    // another executor (the runs of it claimed here are then duplicates).
    for (const q of this.backlogs.values()) {
      for (const entry of q) {
        entry.ids.length = entry.next;
        entry.nakAfterMs = 0;
        if (entry.pending === 0) entry.delivery.nak();
      }
    }
    this.backlogs.clear();
    const sessions = this.registry.all();
    for (const s of sessions) {
      s.draining = true;
      s.send(create(ConnectResponseSchema, { message: { case: "drain", value: create(DrainSchema, { reason: "executor shutting down" }) } }));
    }
    const deadline = Date.now() + (this.options.drainTimeoutMs ?? 10_000);
    while (Date.now() < deadline && sessions.some((s) => s.runs.size > 0 && !s.closed)) {
      await new Promise((r) => setTimeout(r, 50));
    }
    for (const s of sessions) s.close();
    // Each session's end hands its runs back; wait for that, and for results
    // being recorded, but not for a peer that never hangs up.
    await Promise.race([
      Promise.allSettled([...this.sessionsEnding, ...this.tasks]),
      new Promise((r) => setTimeout(r, 5_000).unref()),
    ]);
  }

  private async *connect(requests: AsyncIterable<ConnectRequest>, ctx: HandlerContext): AsyncIterable<ConnectResponse> {
    if (this.stopping) throw new ConnectError("executor is shutting down", Code.Unavailable);
    const it = requests[Symbol.asyncIterator]();
    let timer: NodeJS.Timeout | undefined;
    const first = await Promise.race([
      it.next(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new ConnectError("no register message within 10 s", Code.DeadlineExceeded)),
          REGISTER_TIMEOUT_MS,
        );
      }),
    ]).finally(() => clearTimeout(timer));
    if (first.done || first.value.message.case !== "register") {
      throw new ConnectError("the first message on the stream must be register", Code.InvalidArgument);
    }
    const reg = first.value.message.value;
    const functions = validateRegistration(reg);
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
    this.registry.add(session);
    log.info({ functions: functions.map((f) => f.id), capacity: reg.capacity }, "worker connected");
    session.send(
      create(ConnectResponseSchema, {
        message: {
          case: "registered",
          value: create(RegisteredSchema, {
            workerId: session.id,
            heartbeatIntervalMs: this.options.heartbeatMs,
            batches: reg.batches,
          }),
        },
      }),
    );
    const onAbort = () => session.close();
    ctx.signal.addEventListener("abort", onAbort);
    const reader = (async () => {
      for (;;) {
        const next = await it.next();
        if (next.done) return;
        session.lastSeen = Date.now();
        this.onMessage(session, next.value);
      }
    })()
      .catch((err: unknown) => log.debug({ err }, "worker stream ended with an error"))
      .finally(() => session.close());
    // Not tracked for stop(): a reader only ends when the peer's side does,
    // which a peer that vanished may never do. What it started is tracked.
    void reader;
    this.drain(session.appId);
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

  private onMessage(session: WorkerSession, req: ConnectRequest, inBatch = false): void {
    const m = req.message;
    switch (m.case) {
      case "batch":
        // Batches do not nest: a batch inside one is ignored like an unknown message.
        if (!inBatch) for (const inner of m.value.messages) this.onMessage(session, inner, true);
        return;
      case "stepResult":
        this.trackFor(session, this.onStepResult(session, m.value));
        return;
      case "runResult":
        this.trackFor(session, this.onRunResult(session, m.value));
        return;
      case "suspend":
        this.trackFor(session, this.onSuspend(session, m.value));
        return;
      case "heartbeat":
        session.send(
          create(ConnectResponseSchema, {
            message: { case: "heartbeat", value: create(HeartbeatSchema, { sentAtMs: BigInt(Date.now()) }) },
          }),
        );
        return;
      case "drain":
        session.draining = true;
        return;
      default:
        // A second register or an unknown message: ignored, the stream stays up.
        return;
    }
  }

  private async onStepResult(session: WorkerSession, m: StepResult): Promise<void> {
    const held = session.runs.get(m.runId);
    if (!held || held.lease !== m.lease) {
      this.cancelOnWorker(session, m.runId, m.lease, "the run is no longer held by this worker");
      return;
    }
    if (m.retryAt && m.result.case === "error") {
      // A failed attempt to be retried: journaled as an attempt; the step
      // has no result yet and the worker suspends the run until retryAt.
      const ok = await this.recorder.recordAttempt({
        runId: m.runId,
        lease: m.lease,
        stepKey: m.stepKey,
        stepId: m.stepId,
        attempt: m.attempt,
        startedAtMs: m.startedAt ? timestampMs(m.startedAt) : Date.now(),
        endedAtMs: m.endedAt ? timestampMs(m.endedAt) : Date.now(),
        error: errorFromDetail(m.result.value),
        retryAtMs: timestampMs(m.retryAt),
      });
      if (!ok) {
        this.release(session, m.runId, m.lease);
        this.cancelOnWorker(session, m.runId, m.lease, "the run's lease was lost");
        return;
      }
      session.send(
        create(ConnectResponseSchema, {
          message: { case: "stepAck", value: create(StepAckSchema, { runId: m.runId, stepKey: m.stepKey, lease: m.lease }) },
        }),
      );
      return;
    }
    const outcome = await this.recorder.recordStep(m);
    if (outcome.kind === "lease-lost") {
      // Journal unreachable past the lease, or another execution took over:
      // this one must not proceed. The lease lapses (it is no longer renewed)
      // and the reconciler hands the run on.
      this.release(session, m.runId, m.lease);
      this.cancelOnWorker(session, m.runId, m.lease, "the run's lease was lost");
      return;
    }
    session.send(
      create(ConnectResponseSchema, {
        message: {
          case: "stepAck",
          value: create(StepAckSchema, {
            runId: m.runId,
            stepKey: m.stepKey,
            lease: m.lease,
            ...(outcome.kind === "existing" ? { journaled: toProtoEntry(outcome.entry) } : {}),
          }),
        },
      }),
    );
  }

  private async onRunResult(session: WorkerSession, m: RunResult): Promise<void> {
    const held = session.runs.get(m.runId);
    if (!held || held.lease !== m.lease) return;
    if (m.retryAt && m.result.case === "error") {
      // The handler failed outside any step and will be retried: the
      // attempt is journaled and the run waits for its retry time.
      // Within the longest suspension, whatever the worker asked.
      const retryAtMs = Math.min(timestampMs(m.retryAt), Date.now() + MAX_SUSPEND_MS);
      const ok = await this.recorder.recordAttempt({
        runId: m.runId,
        lease: m.lease,
        stepKey: "",
        stepId: "",
        attempt: held.attempt,
        startedAtMs: held.startedAtMs,
        endedAtMs: Date.now(),
        error: errorFromDetail(m.result.value),
        retryAtMs,
      });
      if (ok) await this.suspender.suspend(held, [{ stepKey: "", stepId: "", kind: "retry", dueAtMs: retryAtMs }]);
      this.release(session, m.runId, m.lease);
      return;
    }
    const { ended, completedAtMs, failureRun } = await this.recorder.recordEnd(m);
    this.release(session, m.runId, m.lease);
    if (ended) {
      const outputJson = m.result.case === "outputJson" ? m.result.value : "null";
      const completed =
        held.completion && completedAtMs !== undefined && outputJson.length <= ANNOUNCED_JSON_MAX_CHARS
          ? { ...held.completion, endedAtMs: completedAtMs, outputJson }
          : undefined;
      this.announceEnd(m.runId, held.eventId, completed);
    }
    if (failureRun) await this.publish([failureRun]);
  }

  /** A run waits: its timers and waits are recorded, then its slot is freed. */
  private async onSuspend(session: WorkerSession, m: Suspend): Promise<void> {
    const held = session.runs.get(m.runId);
    if (!held || held.lease !== m.lease) return;
    let outcome: Awaited<ReturnType<RunSuspender["onSuspend"]>> = "suspended";
    try {
      outcome = await this.suspender.onSuspend(held, m);
    } finally {
      // Whatever happened, this execution is over: its slot is free.
      this.release(session, m.runId, m.lease);
    }
    if (outcome === "requeue") {
      await this.requeue(m.runId, m.lease, session.appId, held.functionId);
    } else if (outcome !== "suspended") {
      const error = outcome;
      const failed = await this.recorder.retrying(() => this.options.store.failRun(m.runId, m.lease, error, this.options.requeueAfterMs));
      if (failed?.ok) this.announceEnd(m.runId, held.eventId);
      if (failed?.failureRun) await this.publish([failed.failureRun]);
    }
  }

  /**
   * Announces a run's end to RunService waiters, gathering the ends of one
   * turn into one message; with the completed run, when given, so that
   * they answer without reading the journal.
   */
  private announceEnd(runId: string, eventId: string, completed?: CompletedRun): void {
    this.ended.push({ runId, eventId, completed });
    if (this.ended.length > 1) return;
    setImmediate(() => {
      const runs = this.ended.splice(0);
      this.options.bus.announceRunsEnded(runs);
    });
  }

  /** Publishes the work of runs QUEUED with a short deadline and confirms it; a lost publish is the reconciler's. */
  private async publish(runs: PublishedRunRef[]): Promise<void> {
    try {
      await this.options.bus.publishWork(workMessages(runs));
      await this.options.store.markPublished(runs, this.options.queuedBackstopMs);
    } catch (err) {
      this.options.log.warn({ err, runs: runs.length }, "publishing run work failed; the reconciler publishes it");
    }
  }

  /** Frees the slot of one execution of a run; a newer execution of the run keeps its slot. */
  private release(session: WorkerSession, runId: string, lease: number): void {
    if (session.runs.get(runId)?.lease !== lease) return;
    session.runs.delete(runId);
    this.drain(session.appId);
  }

  /** Takes a work message: its runs wait in the app's backlog until a worker has a slot. */
  private dispatch(appId: string, delivery: Delivery<RunWork>): void {
    this.backlog(appId).push({ delivery, functionId: delivery.data.functionId, ids: workRunIds(delivery.data), next: 0, pending: 0 });
    this.drain(appId);
  }

  private backlog(appId: string): BacklogEntry[] {
    let q = this.backlogs.get(appId);
    if (!q) this.backlogs.set(appId, (q = []));
    return q;
  }

  /** Runs of an app's backlog not yet given to a claim. */
  private backlogSize(appId: string): number {
    let n = 0;
    for (const e of this.backlogs.get(appId) ?? []) n += e.ids.length - e.next;
    return n;
  }

  /**
   * Claims the runs of an app's backlog, oldest first, as long as its
   * workers have free slots. A message's runs are claimed together (one
   * statement, by the claims' group commit), and it is acked once all of
   * them were handled.
   */
  private drain(appId: string): void {
    const q = this.backlogs.get(appId);
    while (q && q.length > 0) {
      const entry = q[0]!;
      if (entry.next >= entry.ids.length) {
        q.shift();
        continue;
      }
      const session = this.registry.pick(appId, entry.functionId);
      if (!session) {
        if (!this.registry.serves(appId, entry.functionId)) {
          // No worker of this app here serves the function (workers of another
          // version, or the worker went away): the message goes back for an
          // executor that has one, without spinning on it (the runs of it
          // claimed here are duplicates there).
          q.shift();
          entry.ids.length = entry.next;
          entry.nakAfterMs = NO_WORKER_RETRY_MS;
          if (entry.pending === 0) entry.delivery.nak(NO_WORKER_RETRY_MS);
          continue;
        }
        break; // Waits for a slot: release() drains again.
      }
      const runId = entry.ids[entry.next++]!;
      entry.pending++;
      session.claiming++;
      this.track(this.claimAndStart(appId, entry, session, runId));
    }
    if (q?.length === 0) this.backlogs.delete(appId);
    this.puller(appId).kick();
  }

  private async claimAndStart(appId: string, entry: BacklogEntry, session: WorkerSession, runId: string): Promise<void> {
    let claimed: ClaimedRun | null = null;
    try {
      claimed = await this.claims.submit(runId);
    } catch (err) {
      this.options.log.warn({ err, run: runId }, "claiming a run failed");
      entry.nakAfterMs = CLAIM_RETRY_MS;
    } finally {
      session.claiming--;
      entry.pending--;
      if (entry.pending === 0 && entry.next >= entry.ids.length) {
        // Redelivered after a failure: the runs claimed meanwhile are then duplicates, which a claim skips.
        if (entry.nakAfterMs !== undefined) entry.delivery.nak(entry.nakAfterMs);
        else entry.delivery.ack();
      }
    }
    if (!claimed) {
      // Finished, held by another live execution (the message was a
      // duplicate), or the claim failed: the slot is free again.
      this.drain(appId);
      return;
    }
    if (session.closed || claimed.appId !== session.appId) {
      await this.requeue(claimed.runId, claimed.lease, claimed.appId, claimed.functionId);
      this.drain(appId);
      return;
    }
    this.startOn(session, claimed);
  }

  private startOn(session: WorkerSession, claimed: ClaimedRun): void {
    session.runs.set(claimed.runId, {
      runId: claimed.runId,
      functionId: claimed.functionId,
      lease: claimed.lease,
      eventId: claimed.event.id,
      wakes: claimed.wakes,
      attempt: claimed.attempt,
      startedAtMs: Date.now(),
      completion:
        claimed.event.dataJson.length <= ANNOUNCED_JSON_MAX_CHARS
          ? {
              appId: claimed.appId,
              functionId: claimed.functionId,
              eventName: claimed.event.name,
              eventDataJson: claimed.event.dataJson,
              eventTsMs: claimed.event.tsMs,
              createdAtMs: claimed.createdAtMs,
              startedAtMs: claimed.startedAtMs,
              attempts: claimed.lease,
              eventRuns: claimed.eventRuns,
            }
          : undefined,
    });
    session.send(
      create(ConnectResponseSchema, {
        message: {
          case: "startRun",
          value: create(StartRunSchema, {
            runId: claimed.runId,
            functionId: claimed.functionId,
            lease: claimed.lease,
            event: create(RunEventSchema, {
              id: claimed.event.id,
              name: claimed.event.name,
              dataJson: claimed.event.dataJson,
              ts: timestampFromMs(claimed.event.tsMs),
            }),
            journal: claimed.journal.map(toProtoEntry),
            attempt: claimed.attempt,
            stepAttempts: claimed.stepAttempts,
            retryAt: Object.fromEntries(Object.entries(claimed.retryAtMs).map(([key, ms]) => [key, timestampFromMs(ms)])),
          }),
        },
      }),
    );
  }

  /** Hands the runs of a session that ended back to the queue. */
  private async handBack(session: WorkerSession): Promise<void> {
    const runs = [...session.runs.values()];
    session.runs.clear();
    await Promise.all(runs.map((r) => this.requeue(r.runId, r.lease, session.appId, r.functionId)));
    if (!this.stopping) this.drain(session.appId);
  }

  private async requeue(runId: string, lease: number, appId: string, functionId: string): Promise<void> {
    try {
      const ok = await this.options.store.requeueRun(runId, lease, this.options.requeueAfterMs);
      if (!ok) return;
      await this.options.bus.publishWork(workMessages([{ runId, appId, functionId }]));
      await this.options.store.markPublished([{ runId, lease }], this.options.queuedBackstopMs);
    } catch (err) {
      // The lease lapses, or the requeue deadline passes, and the reconciler hands the run on.
      this.options.log.warn({ err, run: runId }, "handing a run back failed");
    }
  }

  private cancelOnWorker(session: WorkerSession, runId: string, lease: number, reason: string): void {
    session.send(
      create(ConnectResponseSchema, {
        message: { case: "cancelRun", value: create(CancelRunSchema, { runId, lease, reason }) },
      }),
    );
  }

  private expireSilentWorkers(): void {
    const limit = Date.now() - 3 * this.options.heartbeatMs;
    for (const s of this.registry.all()) {
      if (s.lastSeen < limit) {
        this.options.log.warn({ worker: s.id }, "worker missed its heartbeats");
        s.close();
      }
    }
  }

  private puller(appId: string): WorkPuller {
    let p = this.pullers.get(appId);
    if (!p) {
      p = new WorkPuller(
        appId,
        this.options.bus,
        () => (this.stopping ? 0 : this.registry.freeSlots(appId) - this.backlogSize(appId)),
        (d) => this.dispatch(appId, d),
        this.options.log,
      );
      this.pullers.set(appId, p);
    }
    return p;
  }

  /** Tracks a result being recorded for a session, so the session's end waits for it. */
  private trackFor(session: WorkerSession, p: Promise<unknown>): void {
    session.pending.add(p);
    void p.then(
      () => session.pending.delete(p),
      () => session.pending.delete(p),
    );
    this.track(p);
  }

  /** Keeps a promise referenced until it settles, so stop() can wait for it and none is dropped. */
  private track(p: Promise<unknown>): void {
    const settled = p.then(
      () => undefined,
      (err: unknown) => this.options.log.error({ err }, "executor task failed"),
    );
    this.tasks.add(settled);
    void settled.finally(() => this.tasks.delete(settled));
  }
}

/** A work message whose runs are being claimed. */
interface BacklogEntry {
  delivery: Delivery<RunWork>;
  functionId: string;
  ids: string[];
  /** Index of the next run to claim. */
  next: number;
  /** Claims in progress. */
  pending: number;
  /** Set when the message is to be redelivered (after this delay) instead of acked: a claim failed, or it went back. */
  nakAfterMs?: number;
}

/** When the work of a run whose claim failed (the journal was unreachable) is offered again. */
const CLAIM_RETRY_MS = 1_000;

/** When work no connected worker can serve is offered again. */
const NO_WORKER_RETRY_MS = 2_000;

/** Most a worker may take between opening the stream and registering. */
const REGISTER_TIMEOUT_MS = 10_000;

/**
 * Longest event data and output (JSON text) an announcement of a completed
 * run carries; past it, waiters read the run from the journal instead of
 * every ingest receiving large payloads.
 */
const ANNOUNCED_JSON_MAX_CHARS = 16 * 1024;
