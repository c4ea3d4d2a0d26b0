import type { ConnectRouter } from "@connectrpc/connect";
import {
  createLogger,
  DEFAULT_TIMER_CHANNEL,
  TimerStore,
  WaitStore,
  createPgliteSql,
  createPgSql,
  JetStreamBus,
  JournalStore,
  MemoryBus,
  migrate,
  serveConnect,
  ServiceMetrics,
  startTracing,
  timedSql,
  type Bus,
  type Config,
  type Logger,
  type RunningServer,
  type Sql,
} from "@stepwise/core";
import { Executor } from "@stepwise/executor";
import { dashboardFiles, ingestRoutes } from "@stepwise/ingest";
import { Scheduler } from "@stepwise/scheduler";

/** A service name `stepwise start` accepts. */
export type ServiceName = "ingest" | "scheduler" | "executor";

/** A started engine or service; stop() shuts it down gracefully. */
export interface Running {
  /** Port of the Connect server, when the service has one. */
  port: number | undefined;
  stop(): Promise<void>;
}

/** The stores of one database and schema, sharing its pool. */
interface Stores {
  sql: Sql;
  store: JournalStore;
  timers: TimerStore;
  waits: WaitStore;
}

function stores(sql: Sql, schema: string | undefined, metrics: ServiceMetrics): Stores {
  // NOTIFY channels are per database: one per schema keeps engines that
  // share a database from waking each other.
  const timerChannel = `${DEFAULT_TIMER_CHANNEL}${schema ? `_${schema}` : ""}`.slice(0, 63);
  return {
    sql,
    store: new JournalStore(sql, { timerChannel, metrics }),
    timers: new TimerStore(sql, { channel: timerChannel }),
    waits: new WaitStore(sql),
  };
}

async function openStore(config: Config, name: string, metrics: ServiceMetrics): Promise<Stores> {
  const pool = createPgSql({
    url: config.databaseUrl,
    max: config.databasePoolSize,
    applicationName: `stepwise-${name}`,
    ...(config.databaseSchema ? { schema: config.databaseSchema } : {}),
  });
  await migrate(pool, config.databaseSchema ? { schema: config.databaseSchema } : {});
  return stores(timedSql(pool, metrics.journal.statement), config.databaseSchema, metrics);
}

/** Starts one service against Postgres and NATS JetStream, as `stepwise start NAME` does. */
export async function startService(name: ServiceName, config: Config, log?: Logger): Promise<Running> {
  const logger = log ?? createLogger(name, config.logLevel);
  const stopTracing = await startTracing(name);
  // GET /metrics on the service's port (the scheduler's own, SCHEDULER_PORT).
  const metrics = new ServiceMetrics({ processMetrics: true });
  const opened = await openStore(config, name, metrics);
  const { sql, store } = opened;
  const bus = await JetStreamBus.connect({ url: config.natsUrl, prefix: config.prefix, name: `stepwise-${name}`, log: logger, metrics });
  let server: RunningServer | undefined;
  let stopService: () => Promise<void>;
  switch (name) {
    case "ingest": {
      server = await serveConnect(ingestRoutes({ bus, store, log: logger, metrics }), config.ingestPort, config.host, {
        plain: [metrics.handler, ...(config.dashboard ? [dashboardFiles()] : [])],
      });
      stopService = async () => {};
      break;
    }
    case "scheduler": {
      const scheduler = new Scheduler({
        ...opened,
        bus,
        log: logger,
        concurrency: config.schedulerConcurrency,
        requeueAfterMs: config.requeueAfterMs,
        reconcileIntervalMs: config.reconcileIntervalMs,
        queuedBackstopMs: config.queuedBackstopMs,
        metrics,
      });
      // No RPCs: GET /healthz and GET /metrics only.
      server = await serveConnect(() => {}, config.schedulerPort, config.host, { plain: [metrics.handler] });
      await scheduler.start();
      stopService = () => scheduler.stop();
      break;
    }
    case "executor": {
      const executor = new Executor({
        ...opened,
        bus,
        log: logger,
        leaseMs: config.leaseMs,
        requeueAfterMs: config.requeueAfterMs,
        heartbeatMs: config.heartbeatMs,
        queuedBackstopMs: config.queuedBackstopMs,
        metrics,
      });
      server = await serveConnect(executor.routes, config.executorPort, config.host, { plain: [metrics.handler] });
      executor.start();
      stopService = () => executor.stop();
      break;
    }
  }
  logger.info({ port: server?.port, prefix: config.prefix }, `${name} started`);
  return {
    port: server?.port,
    async stop() {
      await stopService();
      await server?.close();
      await bus.close();
      await sql.close();
      await stopTracing();
    },
  };
}

/** Options of the embedded engine. */
export interface DevOptions {
  /** Where PGlite keeps the journal; in memory when undefined. */
  dataDir: string | undefined;
  port: number;
  host: string;
  logLevel: string;
  /** Lease of runs on the embedded executor. */
  leaseMs?: number;
  /** Whether to serve the dashboard at / (true when unset). */
  dashboard?: boolean;
}

/**
 * Starts the whole engine in this process, as `stepwise dev` does: PGlite
 * for the journal (same migrations and SQL as Postgres), the in-process bus,
 * and one Connect port serving IngestService, RunService and WorkerService,
 * and GET /metrics with the metrics of all three.
 */
export async function startDev(options: DevOptions): Promise<Running> {
  const log = createLogger("dev", options.logLevel);
  const stopTracing = await startTracing("dev");
  // One registry for the three services, on GET /metrics of the one port.
  const metrics = new ServiceMetrics({ processMetrics: true });
  const sql = timedSql(await createPgliteSql(options.dataDir), metrics.journal.statement);
  await migrate(sql);
  const opened = stores(sql, undefined, metrics);
  const { store } = opened;
  // The in-process bus starts empty: runs left unfinished by an earlier
  // process get their work published again by the first reconciler sweep.
  await store.expireUnfinished();
  const bus: Bus = new MemoryBus();
  const leaseMs = options.leaseMs ?? 15_000;
  const scheduler = new Scheduler({
    ...opened,
    bus,
    log: log.child({ service: "scheduler" }),
    concurrency: 16,
    requeueAfterMs: 60_000,
    reconcileIntervalMs: 1_000,
    metrics,
  });
  const executor = new Executor({
    ...opened,
    bus,
    log: log.child({ service: "executor" }),
    leaseMs,
    requeueAfterMs: 60_000,
    heartbeatMs: 5_000,
    metrics,
  });
  const routes = (router: ConnectRouter) => {
    ingestRoutes({ bus, store, log: log.child({ service: "ingest" }), metrics })(router);
    executor.routes(router);
  };
  const server = await serveConnect(routes, options.port, options.host, {
    plain: [metrics.handler, ...(options.dashboard === false ? [] : [dashboardFiles()])],
  });
  await scheduler.start();
  executor.start();
  log.info({ port: server.port, dataDir: options.dataDir ?? "(memory)" }, "stepwise dev started");
  return {
    port: server.port,
    async stop() {
      await executor.stop();
      await scheduler.stop();
      await server.close();
      await bus.close();
      await sql.close();
      await stopTracing();
    },
  };
}
