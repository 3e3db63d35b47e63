/**
 * A separate process for the lock tests: opens the spool in SPOOL_DIR, spools one delivery, prints one JSON line
 * (`{"held":true,…}` or `{"held":false,"code":…}`) and holds the directory until it is killed.
 */
import { hostname } from 'node:os';
import { Spool } from '../../src/spool/spool.ts';
import { jobFixture } from '../helpers/jobs.ts';

const say = (line: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(line)}\n`);

try {
  const { spool, recovery } = await Spool.open({ dir: process.env.SPOOL_DIR as string, maxBytes: 1 << 20 });
  await spool.append(jobFixture(process.pid));
  say({ held: true, pid: process.pid, hostname: hostname(), recovered: recovery.depth });
  setInterval(() => undefined, 60_000);
} catch (err) {
  say({
    held: false,
    pid: process.pid,
    hostname: hostname(),
    code: (err as { code?: string }).code,
    message: String(err),
  });
  process.exit(3);
}
