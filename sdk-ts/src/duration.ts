/**
 * A length of time: milliseconds as a number, or text such as "500ms",
 * "15s", "10m", "2h", "7d", "1w", or a sum like "1h30m".
 */
export type Duration = number | string;

/** Longest sleep or wait: one year. */
export const MAX_DURATION_MS = 365 * 24 * 3_600_000;

const UNIT_MS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };
const PART = /(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)/gy;

/**
 * Milliseconds of a duration. Throws a TypeError naming `what` when it is
 * not a duration of 0 to one year.
 */
export function parseDuration(d: Duration, what: string): number {
  let ms: number;
  if (typeof d === "number") {
    ms = d;
  } else if (typeof d === "string") {
    const text = d.trim();
    PART.lastIndex = 0;
    ms = 0;
    let matched = 0;
    for (let m = PART.exec(text); m; m = PART.exec(text)) {
      ms += Number(m[1]) * (UNIT_MS[m[2] as string] as number);
      matched = PART.lastIndex;
      while (text[PART.lastIndex] === " ") PART.lastIndex++;
    }
    if (matched === 0 || matched !== text.length) {
      throw new TypeError(`${what}: ${JSON.stringify(d)} is not a duration (such as "500ms", "15s", "10m", "2h", "7d" or "1h30m")`);
    }
  } else {
    throw new TypeError(`${what}: must be a number of milliseconds or a duration string`);
  }
  if (!Number.isFinite(ms) || ms < 0 || ms > MAX_DURATION_MS) {
    throw new TypeError(`${what}: ${JSON.stringify(d)} must be between 0 and one year`);
  }
  return Math.round(ms);
}
