/**
 * The process logger: pino JSON on stdout. Signatures and keys never reach a log line.
 */
import { type Logger, pino } from 'pino';
import type { LogLevel } from './config/config.ts';

export const REDACT_PATHS = [
  'req.headers["x-webhook-signature"]',
  'req.headers.authorization',
  'job.data.signature.header',
  'config.signature',
];

export function createLogger(level: LogLevel, destination?: pino.DestinationStream): Logger {
  const options: pino.LoggerOptions = {
    level,
    base: { service: 'sellsy-webhooks', pid: process.pid },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  // Asynchronous writes to stdout: lines written while a write is in progress go out together in the next one, so a
  // busy listener pays one system call per batch instead of one per line. pino flushes the buffer on exit.
  return pino(options, destination ?? pino.destination({ dest: 1, sync: false }));
}
