/** What a command prints through, and where a started service goes: given to `dispatch` by the bin or by a test. */
import type { DestinationStream, Logger } from 'pino';

/** A service started by `listen`, `work` or `start`. */
export interface Service {
  logger: Logger;
  /** How long `close` may take (`SHUTDOWN_TIMEOUT_MS`). */
  shutdownTimeoutMs: number;
  /** Stops every part together: in-flight requests answered, active jobs finished or handed back. */
  close(): Promise<void>;
  /** Reads DESTINATIONS_FILE again (SIGUSR2); absent: no worker in this process. */
  reload?(origin: string): void;
}

export interface CliIo {
  /** A line of the command's output (stdout). */
  out(line: string): void;
  /** A line about a usage error or a failure (stderr). */
  err(line: string): void;
  /** Whether stdout is a terminal (`doctor` colours its verdicts, `spool drain` shows its progress). */
  isTTY: boolean;
  /** On a terminal: a progress line, written over the previous one (`spool drain`). */
  progress?(line: string): void;
  /** Keeps a started service running until it is asked to stop, then closes it. */
  serve(service: Service): void;
  /** Where a service logs (and `spool drain` its log lines); absent: stdout for a service, stderr for the drain. */
  log?: DestinationStream;
}
