import { Cron } from "croner";

/** A cron schedule that does not parse, with what is wrong. */
export class InvalidCronError extends Error {
  override name = "InvalidCronError";
}

/**
 * A parsed cron schedule in a time zone: five fields, or six with seconds
 * first, as croner reads them.
 */
export class CronSchedule {
  private readonly cron: Cron;

  /** Throws InvalidCronError for a bad pattern or an unknown time zone. */
  constructor(
    readonly pattern: string,
    readonly timezone: string,
  ) {
    try {
      this.cron = new Cron(pattern, { timezone: timezone || "UTC", paused: true, mode: "5-or-6-parts" });
      // croner checks the time zone lazily: compute one tick now.
      this.cron.nextRun(new Date(0));
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      throw new InvalidCronError(message.replace(/^Cron\w*: /, ""));
    }
  }

  /** The first tick strictly after a time, or null when the schedule has none. */
  nextAfter(after: Date): Date | null {
    return this.cron.nextRun(after);
  }
}
