/**
 * The container files: there is no Docker engine in CI, so the Compose file is validated against the Compose
 * specification (dclint; `docker compose config` too where the Compose plugin exists), and the properties the
 * README promises are checked in the files themselves.
 */

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { parse } from 'yaml';
import { loadConfig } from '../src/config/config.ts';
import { ROOT } from './helpers/cli.ts';

const compose = readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8');
const dockerfile = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');

/** Every Compose file of the repository: the root one and the deployment examples. */
const COMPOSE_FILES = ['docker-compose.yml', 'deploy/sentinel/docker-compose.yml'];

test('docker-compose.yml and deploy/sentinel/docker-compose.yml are valid Compose files, without lint warnings', (t) => {
  const scripts = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> })
    .scripts;
  for (const file of COMPOSE_FILES) assert.match(scripts['lint:compose'] ?? '', new RegExp(` ${file} `), file);
  const lint = spawnSync('npm', ['run', '--silent', 'lint:compose'], { cwd: ROOT, encoding: 'utf8' });
  assert.equal(lint.status, 0, lint.stdout + lint.stderr);
  const plugin = spawnSync('docker', ['compose', 'version'], { encoding: 'utf8' });
  if (plugin.status !== 0) {
    t.diagnostic('docker compose plugin not installed here: validated with dclint only');
    return;
  }
  for (const file of COMPOSE_FILES) {
    const config = spawnSync('docker', ['compose', '-f', file, 'config', '--quiet'], { cwd: ROOT, encoding: 'utf8' });
    assert.equal(config.status, 0, `${file}: ${config.stderr}`);
  }
});

test('Compose runs Redis as redis-sellsy with AOF and noeviction, and health checks on both services', () => {
  assert.match(compose, /container_name: redis-sellsy/);
  assert.match(compose, /"--appendonly", "yes"/);
  assert.match(compose, /"--maxmemory-policy", "noeviction"/);
  assert.equal(compose.match(/healthcheck:/g)?.length, 2);
  assert.match(compose, /\/readyz/);
  assert.match(compose, /condition: service_healthy/);
});

/** A Compose value with the variables unset: `${NAME:-default}` becomes `default`. */
const unsetValue = (value: string) => value.replace(/\$\{[A-Z_]+:-([^}]*)\}/g, '$1');

test('Compose serves /metrics on METRICS_PORT, a port it does not publish, so not beside the published webhook', () => {
  const service = (
    parse(compose) as {
      services: Record<string, { environment: Record<string, string>; ports?: string[]; expose?: string[] }>;
    }
  ).services['sellsy-webhooks'];
  assert.ok(service);
  const config = loadConfig({ METRICS_PORT: unsetValue(service.environment.METRICS_PORT ?? '') });
  assert.ok(config.metricsPort !== null, 'METRICS_PORT is set, so /metrics leaves the webhook port');
  const published = (service.ports ?? []).map((p) => Number(unsetValue(p).split(':').at(-1)));
  assert.deepEqual(published, [3000], 'only the webhook port is published');
  assert.ok(!published.includes(config.metricsPort), `METRICS_PORT ${config.metricsPort} is not published`);
});

test('the Dockerfile is multi-stage, runs as a non-root user and starts the CLI', () => {
  assert.ok((dockerfile.match(/^FROM /gm)?.length ?? 0) >= 2, 'multi-stage');
  assert.match(dockerfile, /^USER node$/m);
  assert.match(dockerfile, /^HEALTHCHECK /m);
  assert.match(dockerfile, /^CMD \["node", "dist\/src\/cli.js", "start"\]$/m);
});
