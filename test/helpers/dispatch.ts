/**
 * Runs a command line in this process through `dispatch` (src/cli/dispatch.ts), as the bin would, with its output
 * collected: the same `status`, `stdout` and `stderr` as a child process run by `runCli`, without starting one.
 * Only what runs once and exits: a service (listen, work, start) that starts is closed at once.
 */
import { dispatch, type Service } from '../../src/cli/dispatch.ts';

export interface DispatchResult {
  status: number;
  stdout: string;
  stderr: string;
}

export async function runDispatch(
  args: string[],
  env: NodeJS.ProcessEnv = {},
  options: { isTTY?: boolean } = {},
): Promise<DispatchResult> {
  let stdout = '';
  let stderr = '';
  const started: Service[] = [];
  const status = await dispatch(args, env, {
    out: (line) => {
      stdout += `${line}\n`;
    },
    err: (line) => {
      stderr += `${line}\n`;
    },
    isTTY: options.isTTY ?? false,
    serve: (service) => started.push(service),
  });
  for (const service of started) await service.close();
  return { status, stdout, stderr };
}
