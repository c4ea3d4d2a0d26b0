import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import type { Bus, Logger, ServiceMetrics } from "@stepwise/core";
import { IngestService, SendResponseSchema } from "@stepwise/proto";
import { eventApp, sendEvents, sendStream } from "./send-stream.js";

/**
 * IngestService: validates events, publishes them to the event stream and
 * answers only once the stream acknowledged every one of them, call by
 * call (Send) or over one long-lived stream (SendStream). With `metrics`,
 * it counts the events received and refused.
 */
export function createIngestService(bus: Bus, log: Logger, metrics?: ServiceMetrics): ServiceImpl<typeof IngestService> {
  const m = metrics?.ingest;
  return {
    async send(req, ctx) {
      const traceParent = ctx.requestHeader.get("traceparent") ?? undefined;
      return create(SendResponseSchema, { ids: await sendEvents(req.events, bus, log, traceParent, m, eventApp(ctx)) });
    },
    sendStream(requests, ctx) {
      return sendStream(requests, ctx, { bus, log, metrics: m });
    },
  };
}
