#!/usr/bin/env node
/**
 * The `sellsy-webhooks` executable: runs the command line (src/cli/dispatch.ts) with the process's environment and
 * streams, and owns what only a process has: its signals (a service closes gracefully on SIGTERM, SIGINT, SIGHUP…;
 * SIGUSR2 makes a worker read DESTINATIONS_FILE again) and its exit code.
 */
import closeWithGrace from 'close-with-grace';
import type { CliIo, Service } from './cli/dispatch.ts';

// SIGUSR2 is handled from the first moment, before the rest of the program is even loaded (it is imported below, once
// this handler is in place): while a service starts, Node's default action would end the process (the listener may
// already take deliveries while the worker starts). A reload asked then runs once the service has started.
let running: Service | null = null;
let reloadAsked = false;
process.on('SIGUSR2', () => {
  if (running === null) reloadAsked = true;
  else reload(running, 'SIGUSR2');
});

function reload(service: Service, origin: string): void {
  if (service.reload) service.reload(origin);
  else service.logger.warn({ signal: 'SIGUSR2' }, 'no worker in this process: no destinations to reload');
}

function serve(service: Service): void {
  const { logger } = service;
  closeWithGrace(
    {
      delay: service.shutdownTimeoutMs,
      logger: { error: (m: string) => logger.error(m) },
      // A fault is not a request to stop: an abort caught here (Node aborts on exit when its terminal is gone) would
      // restart the graceful close in a loop, on a dead terminal, using a core. These end the process as usual.
      // SIGUSR2 is the reload (below), not a request to stop.
      skip: ['SIGILL', 'SIGTRAP', 'SIGABRT', 'SIGBUS', 'SIGFPE', 'SIGSEGV', 'SIGUSR2'],
    },
    async ({ signal, err }) => {
      if (err) logger.error({ err }, 'closing after an unexpected error');
      else logger.info({ signal }, 'shutting down: finishing in-flight requests and jobs');
      await service.close();
      logger.info('stopped');
    },
  );
  running = service;
  if (reloadAsked) reload(service, 'SIGUSR2 (while starting)');
}

const io: CliIo = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
  progress: (line) => process.stdout.write(`\r${line}`),
  isTTY: process.stdout.isTTY === true,
  serve,
};

const { dispatch, EXIT_OK } = await import('./cli/dispatch.ts');
const code = await dispatch(process.argv.slice(2), process.env, io);
// A failure ends the process at once: a service that failed half-way through its start may hold connections open.
if (code === EXIT_OK) process.exitCode = code;
else process.exit(code);
