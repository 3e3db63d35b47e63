/**
 * `sellsy-webhooks backfill --since TIME|DURATION [--until TIME|DURATION] [--types LIST] [--lookback DURATION]
 * [--dry-run]`: finds the Sellsy objects changed in a window that no webhook brought (src/reconcile/) and queues one
 * synthetic delivery per change, in the queue the listener writes. Times are ISO 8601 or a duration before now
 * (`24h`, `90m`, `7d`); `--types` takes Sellsy collections (default all of `DEFAULT_TYPES`); `--lookback` is how far
 * back a type without a modification filter (invoices, estimates) is read again (default 30 days, at least the
 * window). Prints its progress on a terminal, then a summary per type. Safe to interrupt and run again.
 * Exit codes: 0 done, 1 failure (Redis unreachable, a Sellsy API error), 2 usage error, 78 no API credentials.
 */
import type { Config } from '../config/config.ts';
import { describeRedis, redisSettingsOf } from '../queue/connection.ts';
import { BullmqProducer } from '../queue/producer.ts';
import { producerOptionsFrom } from '../queue/producer-options.ts';
import { RecordSeen } from '../queue/seen.ts';
import { untilReady } from '../queue/writer.ts';
import { accountClients } from '../reconcile/accounts.ts';
import { DEFAULT_TYPES, planOf } from '../reconcile/collections.ts';
import { reconcile, type Tally } from '../reconcile/reconcile.ts';
import { ReconcileState } from '../reconcile/state.ts';
import { parseFlags } from './flags.ts';
import type { CliIo } from './io.ts';

export const BACKFILL_USAGE =
  'Usage: sellsy-webhooks backfill --since ISO-TIME|DURATION [--until ISO-TIME|DURATION] [--types companies,contacts,invoices,...] [--lookback DURATION] [--dry-run]';

const DEFAULT_LOOKBACK_MS = 30 * 24 * 3600 * 1000;
const UNITS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };

export interface BackfillArgs {
  since: number;
  until: number;
  types: string[];
  lookbackMs: number;
  dryRun: boolean;
}

function durationMs(value: string): number | null {
  const m = /^(\d+)([smhdw])$/.exec(value.trim());
  return m ? Number(m[1]) * (UNITS[m[2] as string] as number) : null;
}

/** Parses the arguments; a string is a usage error to print. */
export function parseBackfillArgs(args: string[], now = Date.now()): BackfillArgs | string {
  const values = parseFlags(
    args,
    {
      since: { type: 'string' },
      until: { type: 'string' },
      types: { type: 'string' },
      lookback: { type: 'string' },
      'dry-run': { type: 'boolean' },
    },
    BACKFILL_USAGE,
  );
  if (typeof values === 'string') return values;
  const time = (flag: string, value: string): number | string => {
    const ago = durationMs(value);
    if (ago !== null) return now - ago;
    const t = Date.parse(value);
    return Number.isNaN(t)
      ? `--${flag} ${JSON.stringify(value)} is neither a date (ISO 8601, e.g. 2026-11-28T09:00:00Z) nor a duration (24h, 90m, 7d)`
      : t;
  };
  if (values.since === undefined) return `--since is required\n${BACKFILL_USAGE}`;
  const since = time('since', values.since);
  if (typeof since === 'string') return since;
  const until = values.until === undefined ? now : time('until', values.until);
  if (typeof until === 'string') return until;
  if (since >= until) return '--since must be before --until';
  const types = values.types === undefined ? [...DEFAULT_TYPES] : values.types.split(',').map((t) => t.trim());
  const unknown = types.filter((t) => planOf(t) === null);
  if (unknown.length > 0 || types.length === 0) {
    return `--types: unknown ${JSON.stringify(unknown.join(','))}; choose among ${DEFAULT_TYPES.join(',')}`;
  }
  let lookbackMs = DEFAULT_LOOKBACK_MS;
  if (values.lookback !== undefined) {
    const ms = durationMs(values.lookback);
    if (ms === null) return `--lookback ${JSON.stringify(values.lookback)} is not a duration (24h, 30d)`;
    lookbackMs = ms;
  }
  return { since, until, types: [...new Set(types)], lookbackMs, dryRun: values['dry-run'] === true };
}

function describeTally(t: Tally): string {
  const parts = [`found ${t.found}`, `queued ${t.queued}`, `already seen ${t.alreadySeen}`];
  if (t.duplicates > 0) parts.push(`already queued ${t.duplicates}`);
  if (t.strategy === 'rescan') parts.push(`unchanged ${t.unchanged}`, `recorded ${t.recorded}`);
  if (t.rateLimited > 0) parts.push(`rate limited ${t.rateLimited}×`);
  return `${t.collection} (account ${t.account}): ${parts.join(', ')}`;
}

const quotaOf = (t: Tally) => `quota left ${t.quotaByMinute ?? '?'}/minute, ${t.quotaByDay ?? '?'}/day`;

export async function backfill(config: Config, args: BackfillArgs, io: CliIo, waitMs = 30_000): Promise<number> {
  const clients = accountClients(config, 'backfill', (message) => io.err(`sellsy-webhooks ${message}`));
  const producer = new BullmqProducer({ ...producerOptionsFrom(config), role: 'reconcile' });
  try {
    if (!(await untilReady(producer, waitMs))) {
      io.err(
        `sellsy-webhooks backfill: Redis at ${describeRedis(redisSettingsOf(config))} did not answer within ${waitMs / 1000} s`,
      );
      return 1;
    }
    const window = `${new Date(args.since).toISOString()} → ${new Date(args.until).toISOString()}`;
    io.out(`backfill ${window}${args.dryRun ? ' (dry run: nothing is queued)' : ''}: ${args.types.join(', ')}`);
    const line = io.isTTY ? io.progress : undefined;
    let tallies: Tally[];
    try {
      tallies = await reconcile(
        {
          accounts: clients,
          writer: producer,
          state: new ReconcileState(producer.client, config.queuePrefix, config.queueName),
          seen: RecordSeen.of(producer.client, config.queuePrefix, config.queueName),
          quotaShare: config.reconcile.quotaShare,
        },
        {
          ...args,
          backfill: true,
          onProgress: line ? (t) => line(`${describeTally(t)} · API calls ${t.calls}, ${quotaOf(t)}`) : undefined,
        },
      );
    } catch (err) {
      if (line) io.out('');
      io.err(`sellsy-webhooks backfill: ${(err as Error).message} (safe to run again)`);
      return 1;
    }
    if (line) io.out('');
    for (const t of tallies) io.out(describeTally(t));
    const sum = (f: (t: Tally) => number) => tallies.reduce((n, t) => n + f(t), 0);
    const calls = clients.reduce((n, c) => n + c.api.calls, 0);
    const last = tallies.at(-1);
    const queued = args.dryRun ? `would queue ${sum((t) => t.changes)}` : `queued ${sum((t) => t.queued)}`;
    io.out(
      `total: found ${sum((t) => t.found)}, ${queued}, already seen ${sum((t) => t.alreadySeen)} · API calls ${calls}` +
        (last ? `, ${quotaOf(last)}` : ''),
    );
    return 0;
  } finally {
    await producer.close();
  }
}
