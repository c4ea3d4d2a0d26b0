import { createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { IngestService, RunService } from "@stepwise/proto";

// The dashboard reads and steers the engine through the public RPCs only,
// as curl and other languages do: Connect with JSON over HTTP/1.1, to the
// ingest that served the page.
const transport = createConnectTransport({ baseUrl: window.location.origin, useBinaryFormat: false });

/** RunService: runs, functions, events, workers; cancel, rerun, replay. */
export const runs: Client<typeof RunService> = createClient(RunService, transport);

/** IngestService: the send-event form. */
export const ingest: Client<typeof IngestService> = createClient(IngestService, transport);
