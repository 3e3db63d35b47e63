/**
 * Configuration checks: `signatures` (is verification on, and where) and `handlers` (which run, and whether the
 * HANDLERS module can be read).
 */
import { access } from 'node:fs/promises';
import { resolve } from 'node:path';
import { type Config, signatureEnabled } from '../../config/config.ts';
import { type CheckResult, describe, fail, ok, warn } from './check.ts';

export async function configChecks(config: Config): Promise<CheckResult[]> {
  const results: CheckResult[] = [];
  const { keys, accountKeys, check, formScope } = config.signature;
  if (!signatureEnabled(config)) {
    results.push(
      warn(
        'signatures',
        'verification off (SELLSY_SIGN_KEY and SELLSY_ACCOUNT_KEYS unset): anything posted to the webhook URL becomes a job',
        'set SELLSY_SIGN_KEY to the sign_key of your Sellsy webhook (SELLSY_ACCOUNT_KEYS for several Sellsy accounts)',
      ),
    );
  } else {
    const what = [
      ...(keys.length > 0 ? [`${keys.length} key${keys.length > 1 ? 's' : ''}`] : []),
      ...(accountKeys.size > 0 ? [`keys for ${accountKeys.size} account${accountKeys.size > 1 ? 's' : ''}`] : []),
    ].join(', ');
    const where =
      check === 'listener'
        ? 'checked by the listener before the 200'
        : 'checked by the worker: badly signed deliveries are queued, then dead letters';
    results.push(
      ok('signatures', `verification on (${what}), ${where} (SIGNATURE_CHECK=${check}, form scope ${formScope})`),
    );
  }

  const builtIns = [
    ...(config.postgres ? ['postgres'] : []),
    ...(config.sellsyApi ? ['sellsy-fetch'] : []),
    ...(config.forward ? ['forward'] : []),
    ...(config.destinations.length > 0 && !config.forward
      ? [`forward to ${config.destinations.length} destinations (${config.destinations.map((d) => d.name).join(', ')})`]
      : []),
  ];
  const parts = [
    `built-in: ${builtIns.length > 0 ? builtIns.join(', ') : 'none'}`,
    `HANDLERS: ${config.worker.handlersModule ?? 'unset'}`,
    `RECORD_ORDER=${config.worker.recordOrder}`,
  ];
  const module = config.worker.handlersModule;
  if (module !== null) {
    const path = resolve(module);
    try {
      await access(path);
    } catch (err) {
      results.push(
        fail(
          'handlers',
          `${parts.join('; ')}: ${path} cannot be read (${(err as NodeJS.ErrnoException).code ?? describe(err)}); the worker will not start`,
          `set HANDLERS to the path of your handler module, relative to the directory the service starts in (${process.cwd()})`,
        ),
      );
      return results;
    }
  }
  if (builtIns.length === 0 && module === null) {
    parts.push('a worker completes each job without doing anything (your own consumers may read the queue instead)');
  }
  results.push(ok('handlers', parts.join('; ')));
  return results;
}
