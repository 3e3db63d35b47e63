/**
 * `sellsy-webhooks doctor`: checks what the service depends on, one line per check:
 *
 *   ok|warn|fail  <check>: <finding>
 *         fix: <what to do>            (warn and fail only)
 *
 * then a count (`0 fail, 2 warn, 11 ok`). Checks, in this order: `signatures`, `handlers`; `redis` (reachable),
 * `redis version`, `redis eviction`, `redis aof`, `redis wait-aof`, `dead letters`, `workers` (skipped when Redis
 * does not answer); `spool`, `spool disk`, `spool contents` (one `spool` warning with SPOOL_MAX_BYTES=0); `postgres`
 * (with DATABASE_URL), `sellsy api` (with SELLSY_CLIENT_ID), `forward url` (with FORWARD_URL), `destination <name>` (each of DESTINATIONS_FILE).
 *
 * It changes nothing, except a probe file created, fsynced and deleted in SPOOL_DIR (and SPOOL_DIR itself when it
 * did not exist, removed again), one Sellsy token request and one look-up of invoice 0, and one HEAD to FORWARD_URL.
 * Every network check has a deadline of a few seconds and they run side by side. No secret is printed: findings
 * show addresses with their password masked, and every line is scrubbed of the configured secrets besides.
 * Exit codes: 0 no check failed (warnings allowed), 1 at least one check failed.
 *
 * This file runs the checks and prints them; the checks of each subsystem live in `doctor/`.
 */
import type { Config } from '../config/config.ts';
import { type CheckResult, type CheckStatus, describe, fail } from './doctor/check.ts';
import { configChecks } from './doctor/config.ts';
import { destinationChecks, forwardCheck } from './doctor/forward.ts';
import { postgresCheck } from './doctor/postgres.ts';
import { redisChecks } from './doctor/redis.ts';
import { sellsyCheck } from './doctor/sellsy.ts';
import { spoolChecks } from './doctor/spool.ts';
import { oneLine } from './format.ts';
import { scrubbing } from './secrets.ts';

export interface DoctorOptions {
  /** Colour the status words (ANSI): for a terminal. */
  color?: boolean;
}

/** The longest any group of checks may take. */
const CHECK_DEADLINE_MS = 15_000;

export async function doctor(
  config: Config,
  out: (line: string) => void,
  options: DoctorOptions = {},
): Promise<number> {
  const write = scrubbing(config, out);
  // Started together, printed in a fixed order: the slowest check bounds the run, not the sum of them.
  // Each check's own failure is caught where it starts: one that rejects while an earlier one is awaited is never
  // left unhandled.
  // And each has an overall deadline: a server that connects, then stalls, cannot hold doctor for long.
  const timers: NodeJS.Timeout[] = [];
  const guarded = (name: string, check: Promise<CheckResult[]>): Promise<CheckResult[]> =>
    Promise.race([
      check.catch((err: unknown) => [
        fail(name, `the check itself failed: ${describe(err)}`, 'report this with the output of doctor'),
      ]),
      new Promise<CheckResult[]>((resolve) => {
        timers.push(
          setTimeout(
            () =>
              resolve([
                fail(name, `no answer within ${CHECK_DEADLINE_MS / 1000} s`, `check that ${name} is not stalled`),
              ]),
            CHECK_DEADLINE_MS,
          ),
        );
      }),
    ]);
  const groups: Promise<CheckResult[]>[] = [
    guarded('config', configChecks(config)),
    guarded('redis', redisChecks(config)),
    guarded('spool', spoolChecks(config)),
  ];
  if (config.postgres) groups.push(guarded('postgres', postgresCheck(config.postgres)));
  if (config.sellsyApi) groups.push(guarded('sellsy api', sellsyCheck(config.sellsyApi)));
  if (config.forward) groups.push(guarded('forward url', forwardCheck(config.forward)));
  else if (config.destinations.length > 0) {
    groups.push(guarded('destinations', destinationChecks(config.destinations)));
  }
  const tally: Record<CheckStatus, number> = { ok: 0, warn: 0, fail: 0 };
  for (const group of groups) {
    for (const result of await group) {
      tally[result.status]++;
      write(formatResult(result, options.color === true));
      if (result.fix !== undefined) write(`      fix: ${oneLine(result.fix, 400)}`);
    }
  }
  for (const timer of timers) clearTimeout(timer);
  write(`${tally.fail} fail, ${tally.warn} warn, ${tally.ok} ok`);
  return tally.fail > 0 ? 1 : 0;
}

const COLORS: Record<CheckStatus, string> = { ok: '\x1b[32m', warn: '\x1b[33m', fail: '\x1b[31m' };

function formatResult(result: CheckResult, color: boolean): string {
  const word = result.status.padEnd(4);
  const shown = color ? `${COLORS[result.status]}${word}\x1b[0m` : word;
  return `${shown}  ${result.check}: ${oneLine(result.finding, 400)}`;
}
