import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import type { Bus, Logger } from "@stepwise/core";
import { IngestService, SendResponseSchema } from "@stepwise/proto";
import { toEventRecords } from "./event-validation.js";

/**
 * IngestService: validates events, publishes them to the event stream and
 * answers only once the stream acknowledged every one of them.
 */
export function createIngestService(bus: Bus, log: Logger): ServiceImpl<typeof IngestService> {
  return {
    async send(req) {
      const records = toEventRecords(req);
      try {
        await bus.publishEvents(records);
      } catch (err) {
        log.error({ err }, "publishing events failed");
        throw new ConnectError("the event stream is unavailable, retry the call", Code.Unavailable);
      }
      return create(SendResponseSchema, { ids: records.map((r) => r.id) });
    },
  };
}
