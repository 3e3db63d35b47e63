/** The deployment files: the example Prometheus alert rules parse and name only metrics the service exports. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { parse } from 'yaml';
import { loadConfig } from '../src/config/config.ts';
import { createMetrics, createWorkerMetrics } from '../src/metrics/metrics.ts';
import { watchQueues } from '../src/metrics/queue-stats.ts';
import { ROOT } from './helpers/cli.ts';
import { freePort } from './helpers/redis-server.ts';

interface Rule {
  alert: string;
  expr: string;
  labels: { severity: string };
  annotations: { summary: string };
}

test('every alert rule has a severity and a summary, and names only metrics the service exports', async () => {
  const doc = parse(readFileSync(join(ROOT, 'deploy/prometheus-alerts.yml'), 'utf8')) as {
    groups: { name: string; rules: Rule[] }[];
  };
  const rules = doc.groups.flatMap((g) => g.rules);
  assert.ok(rules.length >= 10);

  // Every metric family the processes register: the listener's, the worker's (with sellsy-fetch) and the queues'.
  const metrics = createMetrics({ processMetrics: false });
  const api = {
    calls: 0,
    rateLimited: 0,
    quota: { bySecond: null, byMinute: null, byDay: null, byMonth: null, at: null },
  };
  createWorkerMetrics(metrics.registry, { sellsyApi: () => api });
  // An address where nothing listens: only the names are needed, not the values.
  const stats = watchQueues(metrics, loadConfig({ REDIS_URL: `redis://127.0.0.1:${await freePort()}` }));
  const families = new Map<string, string>();
  for (const m of await metrics.registry.getMetricsAsJSON()) families.set(m.name, String(m.type));
  await stats.close();

  for (const rule of rules) {
    assert.ok(['critical', 'warning', 'info'].includes(rule.labels.severity), `${rule.alert}: severity`);
    assert.ok(rule.annotations.summary.length > 10, `${rule.alert}: summary`);
    const names = rule.expr.match(/sellsy_webhooks_[a-z_]+/g) ?? [];
    assert.ok(names.length > 0, `${rule.alert} names a metric`);
    for (const name of names) {
      const family = name.replace(/_(bucket|sum|count)$/, '');
      assert.ok(
        families.has(name) || (families.get(family) === 'histogram' && family !== name),
        `${rule.alert}: ${name} is exported`,
      );
    }
  }
});
