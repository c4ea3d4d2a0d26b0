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
  startTracing,
  type Bus,
  type Config,
  type Logger,
  type RunningServer,
  type Sql,
} from "@stepwise/core";
import { Executor } from "@stepwise/executor";
import { ingestRoutes } from "@stepwise/ingest";
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

function stores(sql: Sql, schema: string | undefined): Stores {
  // NOTIFY channels are per database: one per schema keeps engines that
  // share a database from waking each other.
  const timerChannel = `${DEFAULT_TIMER_CHANNEL}${schema ? `_${schema}` : ""}`.slice(0, 63);
  return {
    sql,
    store: new JournalStore(sql, { timerChannel }),
    timers: new TimerStore(sql, { channel: timerChannel }),
    waits: new WaitStore(sql),
  };
}

async function openStore(config: Config, name: string): Promise<Stores> {
  const sql = createPgSql({
    url: config.databaseUrl,
    max: config.databasePoolSize,
    applicationName: `stepwise-${name}`,
    ...(config.databaseSchema ? { schema: config.databaseSchema } : {}),
  });
  await migrate(sql, config.databaseSchema ? { schema: config.databaseSchema } : {});
  return stores(sql, config.databaseSchema);
}

/** Starts one service against Postgres and NATS JetStream, as `stepwise start NAME` does. */
export async function startService(name: ServiceName, config: Config, log?: Logger): Promise<Running> {
  const logger = log ?? createLogger(name, config.logLevel);
  const stopTracing = await startTracing(name);
  const opened = await openStore(config, name);
  const { sql, store } = opened;
  const bus = await JetStreamBus.connect({ url: config.natsUrl, prefix: config.prefix, name: `stepwise-${name}`, log: logger });
  let server: RunningServer | undefined;
  let stopService: () => Promise<void>;
  switch (name) {
    case "ingest": {
      server = await serveConnect(ingestRoutes({ bus, store, log: logger }), config.ingestPort, config.host);
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
      });
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
      });
      server = await serveConnect(executor.routes, config.executorPort, config.host);
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
}

/**
 * Starts the whole engine in this process, as `stepwise dev` does: PGlite
 * for the journal (same migrations and SQL as Postgres), the in-process bus,
 * and one Connect port serving IngestService, RunService and WorkerService.
 */
export async function startDev(options: DevOptions): Promise<Running> {
  const log = createLogger("dev", options.logLevel);
  const stopTracing = await startTracing("dev");
  const sql = await createPgliteSql(options.dataDir);
  await migrate(sql);
  const opened = stores(sql, undefined);
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
  });
  const executor = new Executor({
    ...opened,
    bus,
    log: log.child({ service: "executor" }),
    leaseMs,
    requeueAfterMs: 60_000,
    heartbeatMs: 5_000,
  });
  const routes = (router: ConnectRouter) => {
    ingestRoutes({ bus, store, log: log.child({ service: "ingest" }) })(router);
    executor.routes(router);
  };
  const server = await serveConnect(routes, options.port, options.host);
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
