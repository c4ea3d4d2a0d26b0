import type { Bus, Delivery, Logger } from "@stepwise/core";
import type { RunWork } from "@stepwise/proto";

/** Largest single pull. */
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
 * have free slots for: the pulls in flight (outstanding) plus the runs held
 * never exceed the capacity. kick() is called whenever slots free up.
 */
export class WorkPuller {
  private outstanding = 0;
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
    const want = Math.min(MAX_BATCH, this.freeSlots() - this.outstanding);
    if (want <= 0) return;
    this.outstanding += want;
    const loop = this.pull(want).finally(() => {
      this.loops.delete(loop);
      this.kick();
    });
    this.loops.add(loop);
  }

  private async pull(max: number): Promise<void> {
    let left = max;
    try {
      for await (const d of this.bus.pullWork(this.appId, max, PULL_EXPIRES_MS, this.aborter.signal)) {
        left--;
        this.outstanding--;
        this.dispatch(d);
      }
    } catch (err) {
      if (!this.aborter.signal.aborted) {
        this.log.warn({ err, app: this.appId }, "pulling run work failed");
        await new Promise((r) => setTimeout(r, 500));
      }
    } finally {
      this.outstanding -= left;
    }
  }

  async stop(): Promise<void> {
    this.aborter.abort();
    await Promise.allSettled([...this.loops]);
  }
}
