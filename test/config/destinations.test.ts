import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadConfig } from '../../src/config/config.ts';
import { ConfigError } from '../../src/errors.ts';
import { ROOT } from '../helpers/cli.ts';
import { useTempDirs } from '../helpers/temp-dirs.ts';

const tempDir = useTempDirs('sellsy-destinations-config-');
const secretA = `whsec_${randomBytes(32).toString('base64')}`;
const secretB = `whsec_${randomBytes(32).toString('base64')}`;

function fileWith(text: string): string {
  const path = join(tempDir(), 'destinations.yaml');
  writeFileSync(path, text);
  return path;
}

/** The problems loadConfig reports for this file and environment. */
function problemsOf(text: string, env: Record<string, string> = {}): string[] {
  try {
    loadConfig({ DESTINATIONS_FILE: fileWith(text), ...env });
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return [...err.problems];
  }
  assert.fail('the configuration was accepted');
}

test('destinations are read from the file with their secrets from the environment and their defaults', () => {
  const path = fileWith(`destinations:
  - name: accounting
    url: https://accounting.internal/hooks/sellsy
    secret: \${ACCOUNTING_SECRET}
    events: ["invoice.*", "payment.*"]
    timeout_ms: 2500
    max_per_second: 20
    breaker_failures: 5
    breaker_probe_seconds: 60
  - name: warehouse
    url: http://warehouse.internal/ingest?token=t
    secrets: ["\${NEW_SECRET}", "\${OLD_SECRET}"]
`);
  const config = loadConfig({
    DESTINATIONS_FILE: path,
    ACCOUNTING_SECRET: secretA,
    NEW_SECRET: secretB,
    OLD_SECRET: secretA,
    FORWARD_TIMEOUT_MS: '7000',
  });
  assert.deepEqual(config.destinations, [
    {
      name: 'accounting',
      url: 'https://accounting.internal/hooks/sellsy',
      secrets: [secretA],
      events: ['invoice.*', 'payment.*'],
      timeoutMs: 2500,
      maxPerSecond: 20,
      breakerFailures: 5,
      breakerProbeSeconds: 60,
      breakerMaxPauseSeconds: 86_400,
    },
    {
      name: 'warehouse',
      url: 'http://warehouse.internal/ingest?token=t',
      secrets: [secretB, secretA],
      events: ['*', 'unknown'],
      timeoutMs: 7000,
      maxPerSecond: null,
      breakerFailures: 10,
      breakerProbeSeconds: 30,
      breakerMaxPauseSeconds: 86_400,
    },
  ]);
  assert.equal(config.forward, null);
});

test('a JSON file is read as well (JSON is YAML)', () => {
  const json = JSON.stringify({ destinations: [{ name: 'a', url: 'http://a.internal/', secret: `\${A_SECRET}` }] });
  const config = loadConfig({ DESTINATIONS_FILE: fileWith(json), A_SECRET: secretA });
  assert.deepEqual(
    config.destinations.map((d) => [d.name, d.secrets]),
    [['a', [secretA]]],
  );
});

test('FORWARD_URL alone is the destination "default", taking every event', () => {
  const config = loadConfig({ FORWARD_URL: 'https://app.internal/hooks', FORWARD_SECRET: secretA });
  assert.deepEqual(config.destinations, [
    {
      name: 'default',
      url: 'https://app.internal/hooks',
      secrets: [secretA],
      events: ['*', 'unknown'],
      timeoutMs: 10_000,
      maxPerSecond: null,
      breakerFailures: 10,
      breakerProbeSeconds: 30,
      breakerMaxPauseSeconds: 86_400,
    },
  ]);
  assert.deepEqual(loadConfig({}).destinations, []);
});

test('a secret variable that is not set is a start-up error naming it', () => {
  const problems = problemsOf(`destinations:
  - name: accounting
    url: https://accounting.internal/hooks
    secret: \${ACCOUNTING_WEBHOOK_SECRET}
`);
  assert.deepEqual(problems, [
    'DESTINATIONS_FILE: destination 1 (accounting): "secret" names the environment variable ACCOUNTING_WEBHOOK_SECRET, which is not set',
  ]);
});

test('a literal secret in the file is refused without being quoted', () => {
  const problems = problemsOf(`destinations:
  - name: accounting
    url: https://accounting.internal/hooks
    secret: ${secretA}
`);
  assert.equal(problems.length, 1);
  assert.match(problems[0] ?? '', /destination 1 \(accounting\): "secret" must be a reference .* a literal secret/);
  assert.ok(!problems.join('\n').includes(secretA.slice(6)), 'the secret is not shown');
});

test('a duplicate name is refused, naming the destination', () => {
  const problems = problemsOf(
    `destinations:
  - { name: crm, url: "https://a.internal/", secret: "\${S}" }
  - { name: crm, url: "https://b.internal/", secret: "\${S}" }
`,
    { S: secretA },
  );
  assert.deepEqual(problems, [
    'DESTINATIONS_FILE: destination 2 (crm): "name" "crm" is used by an earlier destination; names must be unique',
  ]);
});

test('setting both DESTINATIONS_FILE and FORWARD_URL is refused', () => {
  const problems = problemsOf(`destinations:\n  - { name: a, url: "https://a.internal/", secret: "\${S}" }\n`, {
    S: secretA,
    FORWARD_URL: 'https://app.internal/hooks',
    FORWARD_SECRET: secretB,
  });
  assert.equal(problems.length, 1);
  assert.match(problems[0] ?? '', /^DESTINATIONS_FILE and FORWARD_URL: set one of them/);
});

test('every bad entry is reported at once, one line per problem', () => {
  const problems = problemsOf(
    `destinations:
  - name: Bad_Name
    url: ftp://files.internal/
    secret: "\${WEAK}"
  - name: b
    url: https://user:pw@b.internal/hooks?token=secret-token
    secret: "\${S}"
    events: ["invoice"]
    timeout_ms: 0
    breaker_probe_seconds: 0
    retries: 3
  - name: c
    url: https://c.internal/
  - just a string
`,
    { S: secretA, WEAK: 'whsec_c2hvcnQ=' },
  );
  assert.deepEqual(problems, [
    'DESTINATIONS_FILE: destination 1: "name" must be 1 to 40 characters among a-z, 0-9 and "-" (it names the destination in metrics and logs)',
    'DESTINATIONS_FILE: destination 1: "url" must be an http:// or https:// URL (got "ftp:")',
    "DESTINATIONS_FILE: destination 1: the environment variable WEAK must be whsec_ followed by base64 of 24 to 64 random bytes; generate one with: node -e \"console.log('whsec_'+crypto.randomBytes(32).toString('base64'))\" (got a secret of 5 bytes)",
    'DESTINATIONS_FILE: destination 2 (b): unknown field "retries" (fields: name, url, secret, secrets, events, timeout_ms, max_per_second, breaker_failures, breaker_probe_seconds, breaker_max_pause_seconds)',
    'DESTINATIONS_FILE: destination 2 (b): "url" must not hold credentials (user:password@); the receiver verifies the signature instead (got "https://b.internal/hooks")',
    'DESTINATIONS_FILE: destination 2 (b): "events" must be a non-empty list of patterns such as "invoice.*", "*.deleted", "invoice.step", "*" or "unknown"',
    'DESTINATIONS_FILE: destination 2 (b): "timeout_ms" must be a whole number from 1 to 600000 (got 0)',
    'DESTINATIONS_FILE: destination 2 (b): "breaker_probe_seconds" must be a whole number from 1 to 86400 (got 0)',
    'DESTINATIONS_FILE: destination 3 (c): set "secret" (or "secrets" with two during a rotation), and only one of them',
    'DESTINATIONS_FILE: destination 4 must be a mapping with name, url and secret',
  ]);
  assert.ok(!problems.join('\n').includes('secret-token') && !problems.join('\n').includes('pw@'));
});

test('a file that cannot be read, is not YAML or holds no destinations is refused', () => {
  assert.throws(
    () => loadConfig({ DESTINATIONS_FILE: join(tempDir(), 'missing.yaml') }),
    /DESTINATIONS_FILE: cannot read ".*missing\.yaml" \(ENOENT\)/,
  );
  assert.throws(() => loadConfig({ DESTINATIONS_FILE: fileWith('destinations: [ {') }), /is not valid YAML/);
  assert.throws(
    () => loadConfig({ DESTINATIONS_FILE: fileWith('destinations: []') }),
    /must hold "destinations:", a non-empty list/,
  );
});

test('the example file in deploy/ is valid once its secret variables are set', () => {
  const config = loadConfig({
    DESTINATIONS_FILE: join(ROOT, 'deploy/destinations.example.yaml'),
    ACCOUNTING_WEBHOOK_SECRET: secretA,
    CRM_WEBHOOK_SECRET: secretB,
    CRM_WEBHOOK_SECRET_OLD: secretA,
    WAREHOUSE_WEBHOOK_SECRET: secretB,
  });
  assert.deepEqual(
    config.destinations.map((d) => [d.name, d.secrets.length, d.events]),
    [
      ['accounting', 1, ['invoice.*', 'payment.*']],
      ['crm-sync', 2, ['company.*', 'contact.*', 'individual.*']],
      ['warehouse', 1, ['*', 'unknown']],
    ],
  );
});

test('docs/destinations.md shows the example file as it is in deploy/', () => {
  const example = readFileSync(join(ROOT, 'deploy/destinations.example.yaml'), 'utf8');
  const fromList = example.slice(example.indexOf('destinations:'));
  const doc = readFileSync(join(ROOT, 'docs/destinations.md'), 'utf8');
  assert.ok(
    doc.includes(`\`\`\`yaml\n${fromList}\`\`\``),
    'the yaml block of the page is the file from "destinations:"',
  );
});
