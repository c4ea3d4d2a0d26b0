import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import type { CompletedRun, JournalStore, Logger, RunEnd, RunView } from "@stepwise/core";
import {
  ENDED_RUN_STATUSES,
  EventRunsSchema,
  MAX_EVENT_ID_LENGTH,
  WatchRunsResponseSchema,
  type EventRuns,
  type WatchRunsRequest,
  type WatchRunsResponse,
} from "@stepwise/proto";
import type { RunWaiters } from "./run-waiters.js";
import { AnswerQueue } from "./answer-queue.js";
import { toProtoRun } from "./run-proto.js";

/** Most events one WatchRuns stream watches at once. */
export const MAX_WATCHED_EVENTS = 100_000;

/** Most event ids one journal read carries. */
const READ_BATCH = 5_000;

/** How long a read that failed waits before the next try. */
const READ_RETRY_MS = 1_000;

/**
 * One WatchRuns stream. The events the client names are registered with
 * the waiters first and read from the journal after, so an end announced
 * in between is not missed. From then on an announcement that carries the
 * completed run is kept, and once as many completed runs of the event
 * were announced as it started, the event is answered from them, without
 * a read; any other announcement (a failed run, one without its content)
 * or the waiters' recheck marks its event for the next read. The marks of
 * one turn of the event loop share one query, and each event is sent
 * once, when all of its runs ended. Once the client closes its side, the
 * stream ends when nothing it watches is left.
 */
export async function* watchRuns(
  requests: AsyncIterable<WatchRunsRequest>,
  ctx: HandlerContext,
  deps: { store: JournalStore; waiters: RunWaiters; log?: Logger | undefined },
): AsyncIterable<WatchRunsResponse> {
  await deps.waiters.ready();
  const watch = new EventWatch(deps);
  const onAbort = () => watch.close();
  ctx.signal.addEventListener("abort", onAbort);
  const reader = (async () => {
    for await (const req of requests) watch.onRequest(req);
  })().then(
    () => watch.onRequestsEnded(),
    (err: unknown) => watch.fail(err),
  );
  try {
    for (;;) {
      const next = await watch.next();
      if (next === undefined) break;
      yield next;
    }
  } finally {
    ctx.signal.removeEventListener("abort", onAbort);
    watch.close();
    // Not awaited: a request stream ends when the peer's side does, which a
    // peer that vanished may never do. Whatever it brings now is ignored.
    void reader;
  }
}

/** What one WatchRuns stream watches, and what it has yet to send. */
class EventWatch {
  /** Watched events, each with the function that unregisters it from the waiters. */
  private readonly watched = new Map<string, () => void>();
  /** Watched events to read at the next read. */
  private readonly dirty = new Set<string>();
  /**
   * Runs known to have ended, by watched event and run id: announced with
   * their content, or found ended by a read that found others still going.
   */
  private readonly ended = new Map<string, Map<string, RunView>>();
  private readonly outbox = new AnswerQueue<EventRuns>(() => this.watched.size > 0);
  private reading = false;
  private readScheduled = false;

  constructor(private readonly deps: { store: JournalStore; waiters: RunWaiters; log?: Logger | undefined }) {}

  onRequest(req: WatchRunsRequest): void {
    for (const id of [...req.eventIds, ...req.forgetEventIds]) {
      if (id.length === 0 || id.length > MAX_EVENT_ID_LENGTH) {
        throw new ConnectError(`event_ids: each must be an event id of 1-${MAX_EVENT_ID_LENGTH} characters`, Code.InvalidArgument);
      }
    }
    for (const id of req.forgetEventIds) this.unwatch(id);
    for (const id of req.eventIds) {
      if (this.watched.has(id) || this.outbox.closed) continue;
      if (this.watched.size >= MAX_WATCHED_EVENTS) {
        throw new ConnectError(`a stream watches at most ${MAX_WATCHED_EVENTS} events at once`, Code.ResourceExhausted);
      }
      this.watched.set(
        id,
        this.deps.waiters.watch(id, (end) => this.onEnd(id, end)),
      );
      this.dirty.add(id);
    }
    this.scheduleRead();
  }

  onRequestsEnded(): void {
    this.outbox.endRequests();
  }

  fail(err: unknown): void {
    this.outbox.fail(err);
  }

  close(): void {
    this.outbox.close();
    for (const id of [...this.watched.keys()]) this.unwatch(id);
  }

  /** The next response, or undefined once the stream is over. */
  async next(): Promise<WatchRunsResponse | undefined> {
    const events = await this.outbox.next();
    return events && create(WatchRunsResponseSchema, { events });
  }

  private onEnd(id: string, end: RunEnd | undefined): void {
    const completed = end?.completed;
    if (!completed || !this.watched.has(id)) {
      this.mark(id);
      return;
    }
    let answer: EventRuns | undefined;
    try {
      const runs = this.endedRuns(id);
      runs.set(end.runId, toCompletedView(end.runId, id, completed));
      // Fewer: other runs of the event are still going, and their
      // announcements (or the recheck, should one be lost) come later.
      if (runs.size >= completed.eventRuns) {
        answer = create(EventRunsSchema, { eventId: id, runs: [...runs.values()].sort(byCreation).map(toProtoRun) });
      }
    } catch (err) {
      this.deps.log?.warn({ err, event: id }, "an announced run did not convert; reading it instead");
      this.mark(id);
      return;
    }
    if (!answer) return;
    this.unwatch(id);
    this.outbox.push(answer);
  }

  private endedRuns(id: string): Map<string, RunView> {
    let runs = this.ended.get(id);
    if (!runs) this.ended.set(id, (runs = new Map()));
    return runs;
  }

  private mark(id: string): void {
    if (!this.watched.has(id)) return;
    this.dirty.add(id);
    this.scheduleRead();
  }

  private unwatch(id: string): void {
    this.watched.get(id)?.();
    this.watched.delete(id);
    this.dirty.delete(id);
    this.ended.delete(id);
  }


  /** Reads the marked events at the end of this turn, after every mark it brings. */
  private scheduleRead(): void {
    if (this.readScheduled || this.reading || this.dirty.size === 0 || this.outbox.closed) return;
    this.readScheduled = true;
    setImmediate(() => {
      this.readScheduled = false;
      void this.read();
    });
  }

  private async read(): Promise<void> {
    if (this.reading || this.outbox.closed) return;
    this.reading = true;
    const ids = [...this.dirty];
    this.dirty.clear();
    let retry = false;
    try {
      for (let i = 0; i < ids.length && !this.outbox.closed; i += READ_BATCH) {
        const chunk = ids.slice(i, i + READ_BATCH);
        this.collect(chunk, await this.deps.store.runsOfEvents(chunk));
      }
    } catch (err) {
      // The journal is unreachable: the events stay marked and are read again.
      this.deps.log?.warn({ err, events: ids.length }, "reading watched runs failed");
      for (const id of ids) if (this.watched.has(id)) this.dirty.add(id);
      retry = true;
    } finally {
      this.reading = false;
    }
    if (retry) setTimeout(() => this.scheduleRead(), READ_RETRY_MS).unref();
    else this.scheduleRead();
  }

  /** Queues the events whose runs all ended, and stops watching them. */
  private collect(ids: readonly string[], runs: readonly RunView[]): void {
    const byEvent = new Map<string, RunView[]>();
    for (const r of runs) {
      let list = byEvent.get(r.event.id);
      if (!list) byEvent.set(r.event.id, (list = []));
      list.push(r);
    }
    for (const id of ids) {
      const list = byEvent.get(id);
      if (!list || !this.watched.has(id)) continue;
      if (!list.every((r) => ENDED_RUN_STATUSES.has(r.status))) {
        // Kept, so that the announcements of the others complete the answer.
        const known = this.endedRuns(id);
        for (const r of list) if (ENDED_RUN_STATUSES.has(r.status)) known.set(r.id, r);
        continue;
      }
      this.unwatch(id);
      this.outbox.push(create(EventRunsSchema, { eventId: id, runs: list.map(toProtoRun) }));
    }
    // The last event watched may be gone: the stream may end.
    if (this.watched.size === 0) this.outbox.wake();
  }
}

/** A completed run, as announced, in the journal's view of it. */
function toCompletedView(runId: string, eventId: string, c: CompletedRun): RunView {
  return {
    id: runId,
    appId: c.appId,
    functionId: c.functionId,
    status: "COMPLETED",
    lease: c.attempts,
    createdAt: new Date(c.createdAtMs),
    startedAt: new Date(c.startedAtMs),
    endedAt: new Date(c.endedAtMs),
    // Runs that reruns or replays made are never announced with their completion.
    originRunId: null,
    originStepKey: null,
    derivedRunIds: [],
    output: JSON.parse(c.outputJson) as unknown,
    hasOutput: true,
    error: null,
    event: { id: eventId, name: c.eventName, data: JSON.parse(c.eventDataJson) as unknown, ts: new Date(c.eventTsMs) },
    steps: [],
    failedAttempts: [],
  };
}

/** The journal's order of an event's runs: by creation, then id. */
function byCreation(a: RunView, b: RunView): number {
  return a.createdAt.getTime() - b.createdAt.getTime() || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}
