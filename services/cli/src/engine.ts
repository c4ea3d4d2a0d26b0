import { readFileSync } from "node:fs";
import { Code, ConnectError, type ConnectRouter, type HandlerContext } from "@connectrpc/connect";
import { IngestService, RunService, WorkerService } from "@stepwise/proto";
import {
  authenticate,
  callerOf,
  createLogger,
  DEFAULT_ENVIRONMENT,
  environmentPlace,
  environmentRoutes,
  type Implementations,
  implementationsOf,
  KeyCache,
  KeyStore,
  migrateControl,
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
  type TlsFiles,
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

/** One environment's part of a service: its journal, its bus, and what serves it. */
interface Cell {
  sql: Sql;
  /** The implementations of its RPCs, by service type name (none for the scheduler). */
  implementations: Implementations;
  /** Stops the service's work (the executor drains its workers); the server is still up. */
  stopWork(): Promise<void>;
  /** Closes the bus and the pool, after the server closed. */
  close(): Promise<void>;
}

/** Starts one environment's part of a service: its schema (migrated) and its streams. */
async function startCell(name: ServiceName, config: Config, environment: string, logger: Logger, metrics: ServiceMetrics): Promise<Cell> {
  const place = environmentPlace({ schema: config.databaseSchema, prefix: config.prefix }, environment);
  const opened = await openStore({ ...config, databaseSchema: place.schema }, name, metrics);
  const { sql, store } = opened;
  let bus: Bus;
  try {
    bus = await JetStreamBus.connect({
      url: config.natsUrl,
      prefix: place.prefix,
      name: `stepwise-${name}`,
      replicas: config.natsReplicas,
      // A message taken by a process that died (or froze) goes to another within the lease.
      ackWaitMs: config.leaseMs,
      // A work stream made anew holds none of the queued runs' work: the reconciler publishes it again.
      onWorkStreamCreated: async () => void (await store.expireQueued()),
      log: logger,
      metrics,
    });
  } catch (err) {
    await sql.close();
    throw err;
  }
  const close = async () => {
    await bus.close();
    await sql.close();
  };
  switch (name) {
    case "ingest":
      return { sql, implementations: implementationsOf(ingestRoutes({ bus, store, log: logger, metrics })), stopWork: async () => {}, close };
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
        retentionMs: config.retentionMs,
      });
      await scheduler.start();
      return { sql, implementations: new Map(), stopWork: () => scheduler.stop(), close };
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
        maxStepsPerRun: config.maxStepsPerRun,
        metrics,
      });
      executor.start();
      return { sql, implementations: implementationsOf(executor.routes), stopWork: () => executor.stop(), close };
    }
  }
}

/**
 * Starts one service against Postgres and NATS JetStream, as `stepwise
 * start NAME` does. Each environment gets a part of its own (a schema and
 * a stream prefix, environmentPlace): `default` at once, the others as
 * the key table names them (read every KEY_REFRESH_MS) or a call's key
 * asks for them. Ingest and the executor authenticate every call
 * (authenticate) and hand it to the part of its key's environment.
 */
export async function startService(name: ServiceName, config: Config, log?: Logger): Promise<Running> {
  const logger = log ?? createLogger(name, config.logLevel);
  // Read before anything starts: a file that cannot be read stops the service with its name.
  const tls = config.tls && name !== "scheduler" ? readTlsFiles(config.tls) : undefined;
  const stopTracing = await startTracing(name);
  // GET /metrics on the service's port (the scheduler's own, SCHEDULER_PORT).
  const metrics = new ServiceMetrics({ processMetrics: true });
  const first = await startCell(name, config, DEFAULT_ENVIRONMENT, logger, metrics);
  // The keys and the environments live in the deployment's own schema, the default environment's.
  await migrateControl(first.sql, { schema: config.databaseSchema });
  const cells = new Map<string, Promise<Cell>>([[DEFAULT_ENVIRONMENT, Promise.resolve(first)]]);
  // The implementations of the environments that have started, for calls to find without waiting.
  const serving = new Map([[DEFAULT_ENVIRONMENT, first.implementations]]);
  let stopping = false;
  const cellOf = (environment: string): Promise<Cell> => {
    let cell = cells.get(environment);
    if (!cell) {
      if (stopping) return Promise.reject(new ConnectError(`${name} is shutting down`, Code.Unavailable));
      cell = startCell(name, config, environment, logger.child({ environment }), metrics);
      cells.set(environment, cell);
      cell.then(
        (c) => {
          serving.set(environment, c.implementations);
          logger.info({ environment }, `${name} serves environment ${environment}`);
        },
        (err: unknown) => {
          // Tried again by the next call or refresh that needs it.
          cells.delete(environment);
          logger.error({ err, environment }, `starting environment ${environment} failed`);
        },
      );
    }
    return cell;
  };
  const keys = new KeyCache(new KeyStore(first.sql), { log: logger, onEnvironment: (env) => void cellOf(env).catch(() => {}) });
  await keys.start();
  const implementationsFor = (ctx: HandlerContext) => {
    const environment = callerOf(ctx)?.environment ?? DEFAULT_ENVIRONMENT;
    const running = serving.get(environment);
    if (running) return running;
    return cellOf(environment).then(
      (cell) => cell.implementations,
      (err: unknown) => {
        throw err instanceof ConnectError ? err : new ConnectError(`environment ${environment} is not available yet, try again`, Code.Unavailable);
      },
    );
  };
  const plain = [metrics.handler];
  const interceptors = [authenticate(keys, { insecure: config.insecure })];
  let server: RunningServer;
  switch (name) {
    case "ingest":
      server = await serveConnect(environmentRoutes([IngestService, RunService], implementationsFor), config.ingestPort, config.host, {
        plain: [...plain, ...(config.dashboard ? [dashboardFiles()] : [])],
        tls,
        interceptors,
      });
      break;
    case "scheduler":
      // No RPCs: GET /healthz and GET /metrics only.
      server = await serveConnect(() => {}, config.schedulerPort, config.host, { plain });
      break;
    case "executor":
      server = await serveConnect(environmentRoutes([WorkerService], implementationsFor), config.executorPort, config.host, { plain, tls, interceptors });
      break;
  }
  logger.info(
    { port: server.port, prefix: config.prefix, tls: tls !== undefined, keys: keys.size, insecure: config.insecure },
    `${name} started`,
  );
  if (!config.insecure && keys.size === 0 && name !== "scheduler") {
    logger.warn("no API key exists yet, so every call is refused: make one with `stepwise keys create`");
  }
  return {
    port: server.port,
    async stop() {
      stopping = true;
      keys.stop();
      const started = (await Promise.allSettled(cells.values())).flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
      await Promise.all(started.map((c) => c.stopWork()));
      await server.close();
      await Promise.all(started.map((c) => c.close()));
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
    maxStepsPerRun: Number(process.env["STEPWISE_MAX_STEPS_PER_RUN"]) || undefined,
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

function readTlsFiles(files: { certFile: string; keyFile: string }): TlsFiles {
  const read = (file: string, what: string) => {
    try {
      return readFileSync(file);
    } catch (err) {
      throw new Error(`cannot read the TLS ${what} ${file}: ${(err as Error).message}`);
    }
  };
  return { cert: read(files.certFile, "certificate (STEPWISE_TLS_CERT_FILE)"), key: read(files.keyFile, "key (STEPWISE_TLS_KEY_FILE)") };
}
