import { MAX_RUNS_PER_WORK, type Bus, type Delivery, type Logger } from "@stepwise/core";
import type { RunWork } from "@stepwise/proto";

/** Largest single pull, in messages. */
const MAX_BATCH = 256;
/** How long a pull waits on the server for work before it is renewed. */
const PULL_EXPIRES_MS = 30_000;
/**
 * Pulls in flight per app. JetStream keeps at most 512 waiting pulls per
 * consumer; a few batches cover the free slots, and a batch that fills up
 * ends at once and makes room for the next.
 */
const MAX_PULLS = 8;

/**
 * Pulls an app's run work from the bus, never more than the app's workers
 * have free slots for. A message carries up to MAX_RUNS_PER_WORK runs, so
 * each message asked for reserves that many slots (or all that are left,
 * when fewer are): the runs pulled then never exceed the free slots, except
 * by the rest of one message when fewer than MAX_RUNS_PER_WORK were free,
 * which waits in the executor's backlog for a slot. A message that brings
 * fewer runs frees its reservation as it arrives. kick() is called
 * whenever slots free up or reservations end.
 */
export class WorkPuller {
  /** Slots reserved by messages asked for and not yet arrived. */
  private reserved = 0;
  private readonly aborter = new AbortController();
  private readonly loops = new Set<Promise<void>>();

  constructor(
    private readonly appId: string,
    private readonly bus: Bus,
    private readonly freeSlots: () => number,
    private readonly dispatch: (delivery: Delivery<RunWork>) => void,
    private readonly log: Logger,
  ) {}

  /** Starts a pull for the slots not yet covered by pulls in flight. */
  kick(): void {
    if (this.aborter.signal.aborted || this.loops.size >= MAX_PULLS) return;
    const available = this.freeSlots() - this.reserved;
    if (available <= 0) return;
    const perMessage = Math.min(MAX_RUNS_PER_WORK, available);
    const messages = Math.min(MAX_BATCH, Math.floor(available / perMessage));
    this.reserved += messages * perMessage;
    const loop = this.pull(messages, perMessage).finally(() => {
      this.loops.delete(loop);
      this.kick();
    });
    this.loops.add(loop);
  }

  private async pull(messages: number, perMessage: number): Promise<void> {
    let left = messages;
    try {
      for await (const d of this.bus.pullWork(this.appId, messages, PULL_EXPIRES_MS, this.aborter.signal)) {
        left--;
        this.reserved -= perMessage;
        this.dispatch(d);
      }
    } catch (err) {
      if (!this.aborter.signal.aborted) {
        this.log.warn({ err, app: this.appId }, "pulling run work failed");
        await new Promise((r) => setTimeout(r, 500));
      }
    } finally {
      this.reserved -= left * perMessage;
    }
  }

  async stop(): Promise<void> {
    this.aborter.abort();
    await Promise.allSettled([...this.loops]);
  }
}
