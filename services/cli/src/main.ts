#!/usr/bin/env node
import { parseArgs } from "node:util";
import { createPgSql, loadConfig, migrate } from "@stepwise/core";
import {
  callFailure,
  functionsCommand,
  runsCommand,
  sendCommand,
  UsageError,
} from "./client-commands.js";
import { startDev, startService, type Running, type ServiceName } from "./engine.js";
import { keysCommand } from "./key-commands.js";

const USAGE = `Usage:
  stepwise dev [--port 8288] [--dir .stepwise] [--memory]
      The whole engine in one process: embedded Postgres (PGlite) under --dir,
      an in-process bus, IngestService, RunService and WorkerService on --port.
  stepwise start ingest|scheduler|executor
      One service against DATABASE_URL and NATS_URL (docs/configuration.md lists
      every environment variable). Calls need an API key unless STEPWISE_INSECURE=true.
  stepwise keys create|list|revoke ...
      API keys and environments (\`stepwise keys --help\`).
  stepwise migrate
      Applies the journal migrations to DATABASE_URL and exits.
  stepwise runs list|get|cancel|rerun ...
  stepwise send NAME [--data JSON] [--id ID]
  stepwise functions list [--app A]
      Drive a running engine over its public RPCs; \`stepwise runs --help\` and the like
      say more.`;

const write = (s: string) => process.stdout.write(s);

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  switch (command) {
    case "runs":
      process.exitCode = await runsCommand(rest, write);
      return;
    case "send":
      process.exitCode = await sendCommand(rest, write);
      return;
    case "functions":
      process.exitCode = await functionsCommand(rest, write);
      return;
    case "keys":
      process.exitCode = await keysCommand(rest, write);
      return;
    case "dev": {
      const { values } = parseArgs({
        args: rest,
        options: {
          port: { type: "string", default: process.env["INGEST_PORT"] ?? "8288" },
          host: { type: "string", default: process.env["HOST"] ?? "127.0.0.1" },
          dir: { type: "string", default: ".stepwise" },
          memory: { type: "boolean", default: false },
        },
      });
      const running = await startDev({
        port: Number(values.port),
        host: values.host,
        dataDir: values.memory ? undefined : values.dir,
        logLevel: process.env["LOG_LEVEL"] ?? "info",
        dashboard: !["false", "0"].includes(process.env["STEPWISE_DASHBOARD"] ?? ""),
      });
      process.stdout.write(`stepwise dev listening on http://${values.host}:${running.port}\n`);
      stopOnSignals(running);
      return;
    }
    case "start": {
      const name = rest[0];
      if (name !== "ingest" && name !== "scheduler" && name !== "executor") {
        throw new UsageError(`unknown service ${JSON.stringify(name ?? "")}`, USAGE);
      }
      const running = await startService(name as ServiceName, loadConfig());
      stopOnSignals(running);
      return;
    }
    case "migrate": {
      const config = loadConfig();
      const sql = createPgSql({ url: config.databaseUrl, max: 1, ...(config.databaseSchema ? { schema: config.databaseSchema } : {}) });
      try {
        const applied = await migrate(sql, config.databaseSchema ? { schema: config.databaseSchema } : {});
        process.stdout.write(applied.length ? `applied migrations ${applied.join(", ")}\n` : "schema is up to date\n");
      } finally {
        await sql.close();
      }
      return;
    }
    case undefined:
    case "help":
    case "--help":
    case "-h":
      process.stdout.write(`${USAGE}\n`);
      return;
    default:
      throw new UsageError(`unknown command ${JSON.stringify(command)}`, USAGE);
  }
}


function stopOnSignals(running: Running): void {
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) process.exit(1);
    stopping = true;
    running.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        process.stderr.write(`error while stopping on ${signal}: ${String(err)}\n`);
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
}

main(process.argv.slice(2)).catch((err: unknown) => {
  if (err instanceof UsageError) {
    process.stderr.write(`stepwise: ${err.message}\n\n${err.usage}\n`);
    process.exit(2);
  }
  process.stderr.write(`stepwise: ${callFailure(err) ?? (err instanceof Error ? err.message : String(err))}\n`);
  process.exit(1);
});
