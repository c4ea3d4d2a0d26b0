import pino from "pino";

/** The structured logger every service uses. */
export type Logger = pino.Logger;

/** Creates the JSON logger of a service, on stderr so stdout stays for output. */
export function createLogger(service: string, level: string): Logger {
  return pino({ name: service, level, base: { service } }, pino.destination(2));
}
