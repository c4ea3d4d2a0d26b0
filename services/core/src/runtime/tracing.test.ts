import * as http from "node:http";
import { trace } from "@opentelemetry/api";
import { afterAll, describe, expect, it } from "vitest";
import { contextOfTraceParent, startSpanAfter, startTracing } from "./tracing.js";

// Tracing is off and costs a non-recording span until the standard OTEL_*
// variables ask for an exporter; then the services' spans go over OTLP/HTTP.
describe("tracing", () => {
  const received: Array<{ path: string; body: string }> = [];
  const collector = http.createServer((req, res) => {
    let body = "";
    req.on("data", (c: Buffer) => (body += c.toString("latin1")));
    req.on("end", () => {
      received.push({ path: req.url ?? "", body });
      res.writeHead(200, { "content-type": "application/json" });
      res.end("{}");
    });
  });

  afterAll(() => new Promise<void>((resolve) => collector.close(() => resolve())));

  it("without OTEL_EXPORTER_OTLP_ENDPOINT, registers nothing: spans do not record and the given traceparent is handed on", async () => {
    delete process.env["OTEL_EXPORTER_OTLP_ENDPOINT"];
    delete process.env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"];
    const stop = await startTracing("test");
    const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const { span, traceParent } = startSpanAfter("stepwise.send", tp, {});
    expect(span.isRecording()).toBe(false);
    expect(traceParent).toBe(tp);
    expect(startSpanAfter("stepwise.send", undefined, {}).traceParent).toBe("");
    // Found by the fuzz: any other text was handed on to the journal, which refused a NUL in it, and the event with it.
    for (const bad of ["a\u0000", "x".repeat(5000), tp.toUpperCase(), `${tp}-extra`]) expect(startSpanAfter("stepwise.send", bad, {}).traceParent).toBe("");
    span.end();
    await stop();
  });

  it("reads a traceparent into a remote parent, and ignores a malformed one", () => {
    const parent = trace.getSpanContext(contextOfTraceParent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
    expect(parent).toMatchObject({ traceId: "4bf92f3577b34da6a3ce929d0e0e4736", spanId: "00f067aa0ba902b7", traceFlags: 1, isRemote: true });
    expect(trace.getSpanContext(contextOfTraceParent("garbage"))).toBeUndefined();
  });

  it("with OTEL_EXPORTER_OTLP_ENDPOINT, exports the spans over OTLP/HTTP under the service's name, children of the given parent", async () => {
    await new Promise<void>((resolve) => collector.listen(0, "127.0.0.1", () => resolve()));
    const port = (collector.address() as { port: number }).port;
    process.env["OTEL_EXPORTER_OTLP_ENDPOINT"] = `http://127.0.0.1:${port}`;
    const stop = await startTracing("scheduler");
    delete process.env["OTEL_EXPORTER_OTLP_ENDPOINT"];
    const { span, traceParent } = startSpanAfter("stepwise.event", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", { "stepwise.event.id": "e-1" }, "consumer");
    expect(span.isRecording()).toBe(true);
    expect(traceParent).toMatch(/^00-4bf92f3577b34da6a3ce929d0e0e4736-[0-9a-f]{16}-01$/);
    expect(traceParent).not.toContain("00f067aa0ba902b7");
    span.end();
    // Shutting down flushes what the batch processor holds.
    await stop();
    const traces = received.filter((r) => r.path === "/v1/traces");
    expect(traces.length).toBeGreaterThan(0);
    const body = traces.map((t) => t.body).join("");
    expect(body).toContain("stepwise.event");
    expect(body).toContain("stepwise-scheduler");
  });
});
