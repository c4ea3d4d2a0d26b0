import { collectDefaultMetrics, Gauge, Registry } from "prom-client";
import { CounterFamily, type CounterSeries, HistogramFamily, type HistogramSeries } from "./metric-series.js";
import type { PlainHandler } from "./server.js";

// The metrics of a Stepwise process, in Prometheus text format on
// GET /metrics (docs/observability.md lists them). The hot path only adds
// to counters and histograms (plain numbers, metric-series.ts), through
// series looked up by app and function in two maps; what needs a query
// (the queue) or a walk over the sessions (the workers) is read when
// Prometheus scrapes.

/** How a run ended, as runs_ended_total counts it. */
export type RunEndStatus = "COMPLETED" | "FAILED" | "CANCELLED" | "SKIPPED";

/** What became of a step attempt the executor journaled. */
export type StepOutcome = "succeeded" | "failed" | "retried";

/** The group commits whose batch sizes are measured. */
export type GroupCommitKind = "claim" | "step" | "completion" | "event" | "wait_lookup";

/** The JetStream streams publishes go to. */
export type PublishStream = "events" | "work";

/** The QUEUED runs of one function, at a scrape. */
export interface QueuedRuns {
  appId: string;
  functionId: string;
  /** QUEUED runs of the function. */
  depth: number;
  /** Seconds since the oldest QUEUED run that never started was created; 0 when there is none. */
  oldestAgeSeconds: number;
}

/** A connected worker's slots, at a scrape. */
export interface WorkerSlots {
  appId: string;
  capacity: number;
  /** Slots taken by runs held or being claimed. */
  used: number;
}

/** Latencies of round trips: 0.5 ms to 5 s. */
const ROUND_TRIP_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
/** Step bodies: 1 ms to 5 minutes. */
const STEP_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];
/** How late a timer fires: 5 ms to a minute. */
const LATENESS_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
/** Items per statement; a group commit takes at most 500. */
const BATCH_BUCKETS = [1, 2, 5, 10, 20, 50, 100, 200, 500];

const FUNCTION_LABELS = ["app", "function"] as const;

/**
 * The metrics of one process: every service in it records into one
 * registry of its own (not prom-client's global one), so `stepwise dev`,
 * which runs the three services in one process, serves them all on one
 * port, and tests make as many as they like. The parts every service uses
 * (runs, journal, bus) are registered at once; those of one service
 * (ingest, scheduler, executor) when that service first asks for them, so
 * a process only shows the metrics of the services it runs.
 *
 * @example
 * const metrics = new ServiceMetrics({ processMetrics: true });
 * const server = await serveConnect(routes, 8288, "0.0.0.0", { plain: [metrics.handler] });
 */
export class ServiceMetrics {
  readonly registry: Registry;
  /** Runs started and ended, counted where the journal commits it. */
  readonly runs: RunMetrics;
  /** Statements and group commits of the journal. */
  readonly journal: JournalMetrics;
  /** Publishes to JetStream. */
  readonly bus: BusMetrics;
  private ingestPart: IngestMetrics | undefined;
  private schedulerPart: SchedulerMetrics | undefined;
  private executorPart: ExecutorMetrics | undefined;

  /**
   * @param options.processMetrics also prom-client's default metrics of the
   *   process (CPU, memory, event loop delay, GC), under their usual names
   *   (`process_*`, `nodejs_*`). The event loop delay is sampled every
   *   100 ms instead of prom-client's 10: the timer's wake-ups cost an idle
   *   process about 1% of a core at 10 ms.
   */
  constructor(options: { processMetrics?: boolean } = {}) {
    this.registry = new Registry();
    if (options.processMetrics) collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: 100 });
    this.runs = new RunMetrics(this.registry);
    this.journal = new JournalMetrics(this.registry);
    this.bus = new BusMetrics(this.registry);
  }

  /** The ingest service's metrics, registered at the first call. */
  get ingest(): IngestMetrics {
    return (this.ingestPart ??= new IngestMetrics(this.registry));
  }

  /** The scheduler's metrics, registered at the first call. */
  get scheduler(): SchedulerMetrics {
    return (this.schedulerPart ??= new SchedulerMetrics(this.registry));
  }

  /** The executor's metrics, registered at the first call. */
  get executor(): ExecutorMetrics {
    return (this.executorPart ??= new ExecutorMetrics(this.registry));
  }

  /** Every metric in Prometheus text format (version 0.0.4). */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  /** Serves GET /metrics, for serveConnect's `plain` handlers. */
  readonly handler: PlainHandler = (req, res, path) => {
    if (path !== "/metrics") return false;
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD" });
      res.end();
      return true;
    }
    this.text().then(
      (text) => {
        res.writeHead(200, { "content-type": this.registry.contentType });
        if (req.method === "HEAD") res.end();
        else res.end(text);
      },
      () => {
        // Nothing of the cause goes out: a collector's error may name internals.
        res.writeHead(500, { "content-type": "text/plain" });
        res.end("collecting the metrics failed\n");
      },
    );
    return true;
  };
}

/**
 * Children of a labelled metric by app and function, made at the first
 * use: the hot path looks up two maps instead of hashing a labels object.
 * Function ids are bounded by registration, so the maps stay small.
 */
class ByFunction<T> {
  private readonly apps = new Map<string, Map<string, T>>();

  constructor(private readonly make: (appId: string, functionId: string) => T) {}

  get(appId: string, functionId: string): T {
    let functions = this.apps.get(appId);
    if (!functions) this.apps.set(appId, (functions = new Map()));
    let child = functions.get(functionId);
    if (!child) functions.set(functionId, (child = this.make(appId, functionId)));
    return child;
  }
}

/** Runs started and ended, by function. */
export class RunMetrics {
  private readonly started: ByFunction<CounterSeries>;
  private readonly ended: ByFunction<Record<RunEndStatus, CounterSeries>>;

  constructor(registry: Registry) {
    const started = new CounterFamily(
      registry,
      "stepwise_runs_started_total",
      "Runs started: claimed by an executor for the first time.",
      FUNCTION_LABELS,
    );
    const ended = new CounterFamily(
      registry,
      "stepwise_runs_ended_total",
      "Runs ended, by status (COMPLETED, FAILED, CANCELLED, SKIPPED), counted by the process whose statement ended them.",
      [...FUNCTION_LABELS, "status"],
    );
    this.started = new ByFunction((app, fn) => started.of(app, fn));
    this.ended = new ByFunction((app, fn) => ({
      COMPLETED: ended.of(app, fn, "COMPLETED"),
      FAILED: ended.of(app, fn, "FAILED"),
      CANCELLED: ended.of(app, fn, "CANCELLED"),
      SKIPPED: ended.of(app, fn, "SKIPPED"),
    }));
  }

  /** A run was claimed for the first time. */
  runStarted(appId: string, functionId: string): void {
    this.started.get(appId, functionId).value++;
  }

  /** A run ended with this status. */
  runEnded(appId: string, functionId: string, status: RunEndStatus): void {
    this.ended.get(appId, functionId)[status].value++;
  }
}

/** The journal's statements and group commits. */
export class JournalMetrics {
  private readonly statements: HistogramSeries;
  private readonly batches: HistogramFamily<"kind">;

  constructor(registry: Registry) {
    this.statements = new HistogramFamily(
      registry,
      "stepwise_journal_statement_duration_seconds",
      "Time from sending a journal statement to Postgres to its result, waiting for a pooled connection included.",
      ROUND_TRIP_BUCKETS,
    ).of();
    this.batches = new HistogramFamily(
      registry,
      "stepwise_group_commit_batch_size",
      "Items written by one statement of a group commit (claims, step results, completions, events, wait lookups).",
      BATCH_BUCKETS,
      ["kind"],
    );
  }

  /** Records a statement's round trip, in seconds. */
  readonly statement = (seconds: number): void => {
    this.statements.observe(seconds);
  };

  /** What a group commit of this kind calls with each batch's size (GroupCommit's onBatch). */
  batchSize(kind: GroupCommitKind): (size: number) => void {
    const series = this.batches.of(kind);
    return (size) => series.observe(size);
  }
}

/** Publishes to JetStream. */
export class BusMetrics {
  private readonly publishes: HistogramFamily<"stream">;

  constructor(registry: Registry) {
    this.publishes = new HistogramFamily(
      registry,
      "stepwise_bus_publish_duration_seconds",
      "Time from publishing a message to JetStream to its acknowledgement, by stream (events, work).",
      ROUND_TRIP_BUCKETS,
      ["stream"],
    );
  }

  /** What a publish to this stream calls with its latency, in seconds. */
  publishLatency(stream: PublishStream): (seconds: number) => void {
    const series = this.publishes.of(stream);
    return (seconds) => series.observe(seconds);
  }
}

/** Ingest: the events it was sent. */
export class IngestMetrics {
  private readonly received: CounterSeries;
  private readonly rejected: Record<"invalid" | "unavailable", CounterSeries>;

  constructor(registry: Registry) {
    this.received = new CounterFamily(
      registry,
      "stepwise_events_received_total",
      "Events ingest accepted: validated and stored by the event stream (Send and SendStream).",
    ).of();
    const rejected = new CounterFamily(
      registry,
      "stepwise_events_rejected_total",
      "Events of calls ingest refused, by reason: invalid (INVALID_ARGUMENT, nothing published) or unavailable (the event stream did not acknowledge).",
      ["reason"],
    );
    // Both reasons show from the start, so that rate() sees their first increase.
    this.rejected = { invalid: rejected.of("invalid"), unavailable: rejected.of("unavailable") };
  }

  /** Events the event stream stored. */
  eventsReceived(count: number): void {
    this.received.value += count;
  }

  /** Events of a refused call. */
  eventsRejected(count: number, reason: "invalid" | "unavailable"): void {
    this.rejected[reason].value += count;
  }
}

/** The scheduler: timers, and the queue read at each scrape. */
export class SchedulerMetrics {
  private readonly lateness: HistogramSeries;
  private readonly depth: Gauge<"app" | "function">;
  private readonly oldest: Gauge<"app" | "function">;
  private readonly queueSources = new Set<() => Promise<QueuedRuns[]>>();
  private reading: Promise<void> | undefined;

  constructor(registry: Registry) {
    this.lateness = new HistogramFamily(
      registry,
      "stepwise_timer_lateness_seconds",
      "How late timers fired (sleeps, retries, wait and invoke timeouts): the firing's time minus the due time, by the database's clock.",
      LATENESS_BUCKETS,
    ).of();
    // Both gauges come from one query per scrape: the first to collect starts it, the other waits for it.
    const collect = () => this.readQueue();
    this.depth = new Gauge({
      name: "stepwise_queue_depth",
      help: "QUEUED runs, by function: waiting for an executor, or for a concurrency slot or throttle. Read from Postgres at each scrape.",
      labelNames: FUNCTION_LABELS,
      registers: [registry],
      collect,
    });
    this.oldest = new Gauge({
      name: "stepwise_queue_oldest_age_seconds",
      help: "Seconds since the oldest QUEUED run that never started was created, by function (0: none). Read from Postgres at each scrape.",
      labelNames: FUNCTION_LABELS,
      registers: [registry],
      collect,
    });
  }

  /** A timer fired this many seconds after it was due. */
  timerFired(latenessSeconds: number): void {
    this.lateness.observe(Math.max(0, latenessSeconds));
  }

  /**
   * Where the queue gauges are read from at each scrape (one query); the
   * returned function stops reading them. A scrape whose query fails shows
   * no queue samples.
   */
  watchQueue(read: () => Promise<QueuedRuns[]>): () => void {
    this.queueSources.add(read);
    return () => this.queueSources.delete(read);
  }

  private readQueue(): Promise<void> {
    this.reading ??= (async () => {
      try {
        // One source per environment: a function of the same ids in two sums its depth and keeps the oldest age.
        const lists = await Promise.all([...this.queueSources].map((read) => read()));
        const byFunction = new Map<string, QueuedRuns>();
        for (const r of lists.flat()) {
          const key = JSON.stringify([r.appId, r.functionId]);
          const seen = byFunction.get(key);
          byFunction.set(key, seen ? { ...seen, depth: seen.depth + r.depth, oldestAgeSeconds: Math.max(seen.oldestAgeSeconds, r.oldestAgeSeconds) } : r);
        }
        this.depth.reset();
        this.oldest.reset();
        for (const r of byFunction.values()) {
          this.depth.labels(r.appId, r.functionId).set(r.depth);
          this.oldest.labels(r.appId, r.functionId).set(r.oldestAgeSeconds);
        }
      } catch {
        this.depth.reset();
        this.oldest.reset();
      } finally {
        this.reading = undefined;
      }
    })();
    return this.reading;
  }
}

/** The executor: step attempts, and the workers read at each scrape. */
export class ExecutorMetrics {
  private readonly steps: ByFunction<{ duration: HistogramSeries; outcome: Record<StepOutcome, CounterSeries> }>;
  private readonly sources = new Set<() => Iterable<WorkerSlots>>();
  private readonly sessions: Gauge<"app">;
  private readonly slots: Gauge<"app">;
  private readonly used: Gauge<"app">;

  constructor(registry: Registry) {
    const duration = new HistogramFamily(
      registry,
      "stepwise_step_duration_seconds",
      "Duration of the step attempts journaled, by function, from the times the worker reported.",
      STEP_BUCKETS,
      FUNCTION_LABELS,
    );
    const attempts = new CounterFamily(
      registry,
      "stepwise_step_attempts_total",
      "Step attempts journaled, by function and outcome: succeeded, failed (the step's final error) or retried (a failed attempt to be retried).",
      [...FUNCTION_LABELS, "outcome"],
    );
    this.steps = new ByFunction((app, fn) => ({
      duration: duration.of(app, fn),
      outcome: {
        succeeded: attempts.of(app, fn, "succeeded"),
        failed: attempts.of(app, fn, "failed"),
        retried: attempts.of(app, fn, "retried"),
      },
    }));
    // The three gauges come from one walk over the sessions, made again by each: it is short.
    const collect = () => this.readWorkers();
    this.sessions = new Gauge({
      name: "stepwise_worker_sessions",
      help: "Workers connected to this executor, by app.",
      labelNames: ["app"],
      registers: [registry],
      collect,
    });
    this.slots = new Gauge({
      name: "stepwise_worker_slots",
      help: "Slots (the capacity) of the workers connected to this executor, by app.",
      labelNames: ["app"],
      registers: [registry],
      collect,
    });
    this.used = new Gauge({
      name: "stepwise_worker_slots_used",
      help: "Slots of the workers connected to this executor taken by runs they hold or that are being claimed for them, by app.",
      labelNames: ["app"],
      registers: [registry],
      collect,
    });
  }

  /** A step attempt was journaled, with its duration in seconds. */
  stepJournaled(appId: string, functionId: string, outcome: StepOutcome, seconds: number): void {
    const s = this.steps.get(appId, functionId);
    s.duration.observe(Math.max(0, seconds));
    s.outcome[outcome].value++;
  }

  /** Where the worker gauges are read from at each scrape; the returned function stops reading them. */
  watchWorkers(read: () => Iterable<WorkerSlots>): () => void {
    this.sources.add(read);
    return () => this.sources.delete(read);
  }

  private readWorkers(): void {
    const byApp = new Map<string, { sessions: number; capacity: number; used: number }>();
    for (const source of this.sources) {
      for (const w of source()) {
        const a = byApp.get(w.appId) ?? { sessions: 0, capacity: 0, used: 0 };
        a.sessions++;
        a.capacity += w.capacity;
        a.used += w.used;
        byApp.set(w.appId, a);
      }
    }
    for (const g of [this.sessions, this.slots, this.used]) g.reset();
    for (const [app, a] of byApp) {
      this.sessions.labels(app).set(a.sessions);
      this.slots.labels(app).set(a.capacity);
      this.used.labels(app).set(a.used);
    }
  }
}
