import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SpanKind, trace } from "@opentelemetry/api";
import { InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from "@opentelemetry/sdk-trace-base";
import { NodeTracerProvider } from "@opentelemetry/sdk-trace-node";
import { createLogger, loadConfig } from "@stepwise/core";
import { type Running, startService } from "@stepwise/cli";
import { Stepwise, Worker } from "@stepwise/sdk";
import { freePort, Stack } from "./support/stack.js";

// One trace per run, captured with an in-memory span exporter: the
// services run in this process (against the real Postgres and NATS
// JetStream), so that the provider this test registers records their spans
// as well as the SDK's. A span the client has active when it sends is the
// root; Send, the scheduler's handling of the event, each execution of
// the run and each step attempt follow, and the app's own span inside a
// step nests under the step's.
describe("traces", () => {
  const exporter = new InMemorySpanExporter();
  const provider = new NodeTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  const stack = new Stack();
  const services: Running[] = [];
  let client: Stepwise;
  let worker: Worker;

  beforeAll(async () => {
    provider.register();
    const config = loadConfig({
      ...process.env,
      DATABASE_URL: stack.databaseUrl,
      DATABASE_SCHEMA: stack.schema,
      NATS_URL: stack.natsUrl,
      STEPWISE_PREFIX: stack.prefix,
      HOST: "127.0.0.1",
      INGEST_PORT: String(await freePort()),
      EXECUTOR_PORT: String(await freePort()),
      SCHEDULER_PORT: "0",
      LOG_LEVEL: "silent",
      STEPWISE_INSECURE: "true",
    });
    const log = createLogger("traces-test", "silent");
    // One after the other: each migrates the schema on its own.
    for (const name of ["ingest", "scheduler", "executor"] as const) services.push(await startService(name, config, log));
    client = new Stepwise({ appId: "traced", url: `http://127.0.0.1:${config.ingestPort}` });
    const checkout = client.createFunction({ id: "checkout", triggers: [{ event: "cart.checked-out" }] }, async ({ step }) => {
      await step.run("charge", () => trace.getTracer("app").startActiveSpan("app.charge-card", (span) => span.end()));
      await step.sleep("settle", "100ms");
      return step.run("ship", () => "shipped");
    });
    worker = new Worker({ url: `http://127.0.0.1:${config.executorPort}`, functions: [checkout], handleSignals: false });
    await worker.connect();
  }, 60_000);

  afterAll(async () => {
    await worker?.close();
    client?.close();
    for (const s of services.reverse()) await s.stop();
    await stack.stop();
    await provider.shutdown();
  });

  it("a run's trace: the client's span, Send, the event, each execution, each step attempt and the app's span in it", async () => {
    const tracer = trace.getTracer("test");
    const { root, ids } = await tracer.startActiveSpan("client.checkout", async (span) => {
      const sent = await client.send({ name: "cart.checked-out", data: { cart: 7 } });
      span.end();
      return { root: span.spanContext(), ids: sent };
    });
    const { runs } = await client.waitForRuns(ids[0]!, { timeoutMs: 20_000 });
    expect(runs[0]?.status).toBe("COMPLETED");
    // The last spans end as the run ends; give the executor a moment to end its own.
    let spans: ReadableSpan[] = [];
    for (let i = 0; i < 50; i++) {
      spans = exporter.getFinishedSpans().filter((s) => s.spanContext().traceId === root.traceId);
      if (spans.filter((s) => s.name === "stepwise.run checkout").length >= 2) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const named = (name: string) => spans.filter((s) => s.name === name);
    const one = (name: string) => {
      const found = named(name);
      expect(found, name).toHaveLength(1);
      return found[0]!;
    };
    const parentOf = (s: ReadableSpan) => s.parentSpanContext?.spanId;

    const clientSpan = one("client.checkout");
    expect(parentOf(clientSpan)).toBeUndefined();
    const send = one("stepwise.send");
    expect(send.kind).toBe(SpanKind.SERVER);
    expect(parentOf(send)).toBe(root.spanId);
    const event = one("stepwise.event");
    expect(event.kind).toBe(SpanKind.CONSUMER);
    expect(parentOf(event)).toBe(send.spanContext().spanId);
    expect(event.attributes["stepwise.event.id"]).toBe(ids[0]);
    // Two executions: before the sleep and after it, each after the event's span.
    const executions = named("stepwise.run checkout").sort((a, b) => Number(a.attributes["stepwise.run.lease"]) - Number(b.attributes["stepwise.run.lease"]));
    expect(executions).toHaveLength(2);
    for (const e of executions) {
      expect(parentOf(e)).toBe(event.spanContext().spanId);
      expect(e.attributes["stepwise.run.id"]).toBe(runs[0]!.id);
    }
    const charge = one("stepwise.step charge");
    expect(parentOf(charge)).toBe(executions[0]!.spanContext().spanId);
    expect(charge.attributes["stepwise.step.key"]).toBe("charge:0");
    expect(parentOf(one("app.charge-card"))).toBe(charge.spanContext().spanId);
    expect(parentOf(one("stepwise.step ship"))).toBe(executions[1]!.spanContext().spanId);
    // Every span of the run is in the client's trace.
    expect(new Set(spans.map((s) => s.spanContext().traceId))).toEqual(new Set([root.traceId]));
  });
});
