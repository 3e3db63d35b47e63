/**
 * Runs a command line in this process through `dispatch` (src/cli/dispatch.ts), as the bin would, with its output
 * collected: the same `status`, `stdout` and `stderr` as a child process run by `runCli`, without starting one.
 */
import { dispatch, type Service } from '../../src/cli/dispatch.ts';

export interface DispatchResult {
  status: number;
  stdout: string;
  stderr: string;
}

export interface DispatchedService extends DispatchResult {
  /** The service's log lines (JSON), as they come. */
  logs: string[];
  /** Stops what the command started (nothing, when it did not start). */
  close(): Promise<void>;
}

/** A command that runs once and exits; a service (listen, work, start) that starts is closed at once. */
export async function runDispatch(
  args: string[],
  env: NodeJS.ProcessEnv = {},
  options: { isTTY?: boolean } = {},
): Promise<DispatchResult> {
  const { close, logs: _, ...result } = await startDispatch(args, env, options);
  await close();
  return result;
}

/** A service (listen, work, start) started in this process, running until `close`. */
export async function startDispatch(
  args: string[],
  env: NodeJS.ProcessEnv = {},
  options: { isTTY?: boolean } = {},
): Promise<DispatchedService> {
  let stdout = '';
  let stderr = '';
  const logs: string[] = [];
  const started: Service[] = [];
  const status = await dispatch(args, env, {
    out: (line) => {
      stdout += `${line}\n`;
    },
    err: (line) => {
      stderr += `${line}\n`;
    },
    isTTY: options.isTTY ?? false,
    progress: (line) => {
      stdout += `\r${line}`;
    },
    serve: (service) => started.push(service),
    log: { write: (line: string) => logs.push(...line.split('\n').filter(Boolean)) },
  });
  const close = async () => {
    for (const service of started.splice(0)) await service.close();
  };
  return { status, stdout, stderr, logs, close };
}
