/**
 * The process logger: pino JSON on stdout (pretty when stdout is a terminal). Signatures and keys never reach a log
 * line.
 */
import { type Logger, pino } from 'pino';
import type { LogLevel } from './config/config.ts';

/**
 * The only secret-bearing field any log line carries: the signature header inside the whole job that an error line
 * logs. Requests and the configuration are never logged (test: no log line contains a key or a signature), and each
 * redaction path is work on every log call.
 */
export const REDACT_PATHS = ['job.data.signature.header'];

export function createLogger(level: LogLevel, destination?: pino.DestinationStream): Logger {
  const options: pino.LoggerOptions = {
    level,
    base: { service: 'sellsy-webhooks', pid: process.pid },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  // Synchronous writes to stdout (pino's default): measured cheaper per line than pino's asynchronous destination
  // here (its hand-off to the thread pool costs more than the write), and nothing is lost on a crash.
  if (!destination && process.stdout.isTTY) {
    // A person is reading: colours and one readable line per event (pino-pretty, in a worker thread). Piped or
    // collected output stays JSON.
    return pino({ ...options, transport: { target: 'pino-pretty', options: { translateTime: 'SYS:HH:MM:ss.l' } } });
  }
  return pino(options, destination ?? pino.destination({ dest: 1, sync: true }));
}

/** The longest a value taken from an unauthenticated request is logged (characters). */
export const LOGGED_VALUE_MAX = 128;

/**
 * A value from an unauthenticated request (corpid, path, content type, user agent…) as a log line may carry it: cut
 * to `LOGGED_VALUE_MAX` characters with the length it had, so that a 1 MiB `corpid` does not make a 1 MiB line.
 */
export function clipped<T extends string | null | undefined>(value: T): T | string {
  if (typeof value !== 'string' || value.length <= LOGGED_VALUE_MAX) return value;
  return `${value.slice(0, LOGGED_VALUE_MAX)}… (${value.length} characters)`;
}
