import type { Sql } from "../journal/sql.js";
import type { Logger } from "./log.js";

/** Options of NotifiedRounds. */
export interface NotifiedRoundsOptions {
  sql: Sql;
  /** The NOTIFY channel that wakes a round; a function when it is read from the database. */
  channel: string | (() => Promise<string>);
  /** One round of work; resolves with how long to sleep before the next unless woken first. */
  round: () => Promise<number>;
  /** Sleep after a round that threw. */
  retryMs: number;
  /** Shortest time between the starts of two rounds, so that the notifications of a burst share one (0: none). */
  spacingMs?: number;
  log: Logger;
  /** What a round does, for the log line of one that failed. */
  what: string;
}

/**
 * Runs rounds of work one at a time: at start, on each notification of a
 * channel (right after the round in progress, when one is), and after the
 * sleep each round asks for, in case a notification was lost. A service's
 * schedulers use it for the timer firing and the slot keeper.
 */
export class NotifiedRounds {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = false;
  private lastStart = 0;
  private unlisten: (() => Promise<void>) | undefined;

  constructor(private readonly options: NotifiedRoundsOptions) {}

  async start(): Promise<void> {
    const { channel, sql } = this.options;
    this.unlisten = await sql.listen(typeof channel === "string" ? channel : await channel(), () => this.wake());
    this.wake();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.unlisten?.();
    await this.running;
  }

  /** A round soon: right after the one in progress, and no sooner than spacingMs after the last began. */
  wake(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    clearTimeout(this.timer);
    const wait = this.lastStart + (this.options.spacingMs ?? 0) - Date.now();
    if (wait > 0) {
      this.timer = setTimeout(() => this.run(), wait);
      return;
    }
    this.run();
  }

  private run(): void {
    if (this.stopped || this.running) return;
    clearTimeout(this.timer);
    this.lastStart = Date.now();
    this.running = this.options
      .round()
      .catch((err: unknown) => {
        this.options.log.warn({ err }, `${this.options.what} failed`);
        return this.options.retryMs;
      })
      .then((delay) => {
        this.running = undefined;
        if (this.stopped) return;
        if (this.again) {
          this.again = false;
          this.wake();
          return;
        }
        this.timer = setTimeout(() => this.wake(), delay);
      });
  }
}
