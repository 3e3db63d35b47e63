/**
 * The deployment files: the example Prometheus alert rules parse and name only metrics the service exports; the
 * Kubernetes manifests (deploy/kubernetes/) and the Sentinel Compose example (deploy/sentinel/) set only variables the
 * service reads, to values it accepts, run commands the CLI has, probe paths and ports the process serves, give it
 * more time to stop than SHUTDOWN_TIMEOUT_MS, and keep each listener's spool on a volume of its own.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { parse, parseAllDocuments } from 'yaml';
import { dispatch, EXIT_CONFIG } from '../src/cli/dispatch.ts';
import { type Config, loadConfig } from '../src/config/config.ts';
import { ENV_NAMES } from '../src/config/schema.ts';
import {
  createDestinationMetrics,
  createMetrics,
  createReconcileMetrics,
  createWorkerMetrics,
} from '../src/metrics/metrics.ts';
import { watchQueues } from '../src/metrics/queue-stats.ts';
import { createWebhookWatchMetrics } from '../src/reconcile/webhook-watch.ts';
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
  createReconcileMetrics(metrics.registry, 900, async () => null);
  createWebhookWatchMetrics(metrics.registry, () => null);
  createDestinationMetrics(metrics.registry, ['default']);
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

// ---- what the image runs, and what a process serves ---------------------------------------------------------------

const dockerfile = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
/** The image's CMD: the program and the CLI script every container runs, then the command (`start`). */
const IMAGE_CMD = JSON.parse(/^CMD (\[.*\])$/m.exec(dockerfile)?.[1] ?? '[]') as string[];
const CLI_PREFIX = IMAGE_CMD.slice(0, 2);
/** The runtime stage's ENV (the last ENV instruction): what a container has before its own variables. */
const IMAGE_ENV: Record<string, string> = Object.fromEntries(
  [
    ...(/^ENV ((?:.*\\\n)*.*)$/gm.exec(dockerfile.slice(dockerfile.lastIndexOf('\nENV ')))?.[1] ?? '').matchAll(
      /([A-Z_]+)=(\S+)/g,
    ),
  ].map(([, name, value]) => [name ?? '', value ?? '']),
);

/** The CLI arguments of a container's command line (command and args, or the image's CMD), checked to run the CLI. */
function cliArgs(where: string, argv: readonly string[] | undefined): string[] {
  const line = argv && argv.length > 0 ? argv : IMAGE_CMD;
  assert.deepEqual(line.slice(0, 2), CLI_PREFIX, `${where}: runs the image's CLI (${CLI_PREFIX.join(' ')})`);
  return line.slice(2);
}

/** The CLI takes these arguments: it gets as far as reading the configuration (78 on a bad one), not a usage error. */
async function assertCliAccepts(where: string, args: string[]): Promise<void> {
  let printed = '';
  const io = {
    out: (line: string) => {
      printed += `${line}\n`;
    },
    err: (line: string) => {
      printed += `${line}\n`;
    },
    isTTY: false,
    serve: () => assert.fail(`${where}: nothing may start`),
  };
  const status = await dispatch(args, { PORT: 'not-a-port' }, io);
  assert.equal(status, EXIT_CONFIG, `${where}: sellsy-webhooks ${args.join(' ')} is a command of the CLI\n${printed}`);
}

/** What a process started with `args` serves on each port: the listener's port, and METRICS_PORT when set. */
function servedPaths(args: readonly string[], config: Config): Map<number, Set<string>> {
  const command = args[0];
  const listener = command === 'listen' || command === 'start';
  const worker = command === 'work' || command === 'start';
  const served = new Map<number, Set<string>>();
  if (listener) served.set(config.port, new Set(['/healthz', '/readyz', ...(config.metricsPort ? [] : ['/metrics'])]));
  if (config.metricsPort !== null) {
    served.set(config.metricsPort, new Set(['/metrics', '/healthz', ...(worker ? ['/readyz'] : [])]));
  }
  return served;
}

function assertEnvNames(where: string, names: Iterable<string>): number {
  let count = 0;
  for (const name of names) {
    assert.ok((ENV_NAMES as string[]).includes(name), `${where}: sets ${name}, which the service does not read`);
    count++;
  }
  return count;
}

// ---- Kubernetes -----------------------------------------------------------------------------------------------------

interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; labels?: Record<string, string> };
  // biome-ignore lint/suspicious/noExplicitAny: a manifest's shape depends on its kind
  spec?: any;
  data?: Record<string, string>;
  stringData?: Record<string, string>;
  resources?: string[];
}
interface Probe {
  httpGet?: { path: string; port: number | string };
}
interface Container {
  name: string;
  command?: string[];
  args?: string[];
  env?: { name: string; value?: string }[];
  envFrom?: { configMapRef?: { name: string }; secretRef?: { name: string } }[];
  ports?: { name?: string; containerPort: number }[];
  volumeMounts?: { name: string; mountPath: string }[];
  livenessProbe?: Probe;
  readinessProbe?: Probe;
  startupProbe?: Probe;
  lifecycle?: { preStop?: { exec?: { command: string[] } } };
}

const K8S_DIR = 'deploy/kubernetes';
const manifestFiles = readdirSync(join(ROOT, K8S_DIR)).filter((f) => /\.ya?ml$/.test(f));
const manifests = manifestFiles.flatMap((file) =>
  parseAllDocuments(readFileSync(join(ROOT, K8S_DIR, file), 'utf8')).map((doc) => {
    assert.deepEqual(doc.errors, [], `${file} parses`);
    return { file, object: doc.toJS() as K8sObject };
  }),
);
const objects = (kind: string) => manifests.filter((m) => m.object.kind === kind).map((m) => m.object);
const WORKLOADS = ['StatefulSet', 'Deployment', 'Job'];

/** A container's environment: the image's, then its ConfigMaps and Secrets (envFrom), then its own `env`. */
function containerEnv(container: Container): Record<string, string> {
  const env: Record<string, string> = { ...IMAGE_ENV };
  for (const from of container.envFrom ?? []) {
    const ref = from.configMapRef ?? from.secretRef;
    const kind = from.configMapRef ? 'ConfigMap' : 'Secret';
    const source = objects(kind).find((o) => o.metadata.name === ref?.name);
    assert.ok(source, `${container.name}: envFrom names the ${kind} ${ref?.name}, which the manifests define`);
    const decoded = Object.entries(source.data ?? {}).map(([k, v]) => [
      k,
      kind === 'Secret' ? Buffer.from(v, 'base64').toString('utf8') : v,
    ]);
    Object.assign(env, Object.fromEntries(decoded), source.stringData);
  }
  for (const { name, value } of container.env ?? []) env[name] = value ?? '';
  return env;
}

/** A probe's or a Service's port, by number or by the container port's name. */
function portNumber(container: Container, port: number | string): number {
  if (typeof port === 'number') return port;
  const named = container.ports?.find((p) => p.name === port);
  assert.ok(named, `${container.name}: the port ${port} is a named port of the container`);
  return named.containerPort;
}

/** Every container of every workload, with its CLI arguments, its configuration and its pod spec. */
function containers() {
  return manifests.flatMap(({ file, object }) => {
    if (!WORKLOADS.includes(object.kind)) return [];
    const pod = object.spec.template.spec;
    return (pod.containers as Container[]).map((container) => {
      const where = `${file}: ${object.kind} ${object.metadata.name}, container ${container.name}`;
      const args = cliArgs(where, [...(container.command ?? []), ...(container.args ?? [])]);
      return { where, object, pod, container, args, config: loadConfig(containerEnv(container)) };
    });
  });
}

test('every Kubernetes manifest parses, and every variable it sets is one the service reads', () => {
  assert.ok(manifestFiles.length >= 5 && manifests.length >= 8, `${manifests.length} objects`);
  let names = 0;
  for (const { file, object } of manifests) {
    assert.ok(object.apiVersion && object.kind, `${file}: an object with a kind`);
    assert.ok(object.kind === 'Kustomization' || object.metadata?.name, `${file}: a ${object.kind} with a name`);
    if (object.kind === 'ConfigMap') names += assertEnvNames(`${file}: ConfigMap`, Object.keys(object.data ?? {}));
    if (object.kind === 'Secret') {
      names += assertEnvNames(`${file}: Secret`, [
        ...Object.keys(object.data ?? {}),
        ...Object.keys(object.stringData ?? {}),
      ]);
    }
    if (!WORKLOADS.includes(object.kind)) continue;
    for (const container of object.spec.template.spec.containers as Container[]) {
      names += assertEnvNames(
        `${file}: ${container.name}`,
        (container.env ?? []).map((e) => e.name),
      );
    }
  }
  assert.ok(names >= 10, `the manifests set the service's variables (${names})`);
  // Sentinel: the addresses of the Sentinels and the master's name, and the Sentinels' password as a secret.
  const settings = objects('ConfigMap').flatMap((o) => Object.keys(o.data ?? {}));
  assert.ok(settings.includes('REDIS_SENTINELS') && settings.includes('REDIS_SENTINEL_MASTER'));
  const secrets = objects('Secret').flatMap((o) => Object.keys(o.stringData ?? {}));
  for (const name of ['REDIS_URL', 'REDIS_SENTINEL_PASSWORD', 'SELLSY_SIGN_KEY']) {
    assert.ok(secrets.includes(name) && !settings.includes(name), `${name} is in the Secret, not the ConfigMap`);
  }
});

test('every Kubernetes container runs a command of the CLI, with a configuration it accepts', async () => {
  const commands = new Set<string>();
  for (const { where, args, config } of containers()) {
    await assertCliAccepts(where, args);
    assert.equal(config.redis.kind, 'sentinel', `${where}: through the Sentinels`);
    commands.add(args.join(' '));
  }
  assert.deepEqual([...commands].sort(), ['listen', 'spool drain', 'work']);
});

test('Kubernetes probes ask for paths the process serves, on its PORT or METRICS_PORT, and its ports are those', () => {
  let probes = 0;
  for (const { where, container, args, config } of containers()) {
    const served = servedPaths(args, config);
    for (const { containerPort } of container.ports ?? []) {
      assert.ok(served.has(containerPort), `${where}: port ${containerPort} is PORT or METRICS_PORT and served`);
    }
    if (args[0] === 'spool') continue;
    for (const kind of ['livenessProbe', 'readinessProbe', 'startupProbe'] as const) {
      const probe = container[kind]?.httpGet;
      assert.ok(probe, `${where}: has an HTTP ${kind}`);
      const port = portNumber(container, probe.port);
      assert.ok(served.get(port)?.has(probe.path), `${where}: ${kind} ${probe.path} on ${port} is served there`);
      assert.ok(['/healthz', '/readyz'].includes(probe.path), `${where}: ${kind} asks a health route`);
      probes++;
    }
    assert.equal(container.livenessProbe?.httpGet?.path, '/healthz', `${where}: liveness is /healthz`);
    assert.equal(container.readinessProbe?.httpGet?.path, '/readyz', `${where}: readiness is /readyz`);
  }
  assert.equal(probes, 6, 'listeners and workers have their three probes each');
});

test('Kubernetes gives listeners and workers longer than SHUTDOWN_TIMEOUT_MS (after any preStop pause) to stop', () => {
  let checked = 0;
  for (const { where, pod, container, args, config } of containers()) {
    if (args[0] === 'spool') continue;
    const pause = container.lifecycle?.preStop?.exec?.command;
    const pauseMs = pause?.[0] === 'sleep' ? Number(pause[1]) * 1000 : 0;
    const graceSeconds = pod.terminationGracePeriodSeconds as number | undefined;
    assert.ok(graceSeconds !== undefined, `${where}: terminationGracePeriodSeconds is set`);
    assert.ok(
      graceSeconds * 1000 > config.shutdownTimeoutMs + pauseMs,
      `${where}: ${graceSeconds} s > SHUTDOWN_TIMEOUT_MS ${config.shutdownTimeoutMs} ms + preStop ${pauseMs} ms`,
    );
    checked++;
  }
  assert.equal(checked, 2);
});

test("Kubernetes keeps each listener's spool on a volume of its own, which the drain Job mounts in the same place", () => {
  const [listeners, ...others] = objects('StatefulSet');
  assert.ok(listeners && others.length === 0, 'the listeners are the one StatefulSet');
  const claim = listeners.spec.volumeClaimTemplates?.[0]?.metadata?.name as string;
  assert.ok(claim, 'a volume claim template: one volume per replica');
  const listener = containers().find((c) => c.object === listeners);
  assert.ok(listener && listener.args[0] === 'listen');
  const mount = listener.container.volumeMounts?.find((m) => m.name === claim)?.mountPath;
  assert.ok(mount, 'the listener mounts its claim');
  // SPOOL_DIR is a directory of its own on the volume, not the volume's root: the listener makes SPOOL_DIR private
  // (0700), and a fresh volume's root belongs to root, which the listener's user cannot change.
  assert.equal(listener.config.spool.dir, `${mount}/spool`, 'SPOOL_DIR is on the volume');

  const [drain] = objects('Job');
  assert.ok(drain, 'a spool drain Job template');
  const job = containers().find((c) => c.object === drain);
  assert.deepEqual(job?.args, ['spool', 'drain']);
  const volume = (
    drain.spec.template.spec.volumes as { name: string; persistentVolumeClaim?: { claimName: string } }[]
  ).find((v) => v.persistentVolumeClaim);
  assert.match(
    volume?.persistentVolumeClaim?.claimName ?? '',
    new RegExp(`^${claim}-${listeners.metadata.name}-\\d+$`),
    'the Job mounts the claim of one listener replica: <template>-<StatefulSet>-<ordinal>',
  );
  assert.equal(job?.container.volumeMounts?.find((m) => m.name === volume?.name)?.mountPath, mount);
  assert.equal(job?.config.spool.dir, listener.config.spool.dir, 'the same SPOOL_DIR');
});

test('Kubernetes: the listener Service, and a PodDisruptionBudget for listeners and workers, select their pods', () => {
  const selects = (selector: Record<string, string>, labels: Record<string, string>) =>
    Object.entries(selector).every(([k, v]) => labels[k] === v);
  const listener = containers().find((c) => c.args[0] === 'listen');
  assert.ok(listener);
  const listenerLabels = listener.object.spec.template.metadata.labels as Record<string, string>;
  const services = objects('Service').filter((s) => selects(s.spec.selector, listenerLabels));
  assert.ok(
    services.some((s) => s.spec.clusterIP !== 'None'),
    'a Service for the deliveries',
  );
  assert.ok(
    services.some((s) => s.metadata.name === listener.object.spec.serviceName),
    "the StatefulSet's Service",
  );
  for (const service of services) {
    for (const port of service.spec.ports as { targetPort: number | string }[]) {
      assert.equal(portNumber(listener.container, port.targetPort), listener.config.port, 'to the webhook port only');
    }
  }
  for (const kind of ['StatefulSet', 'Deployment']) {
    for (const workload of objects(kind)) {
      const labels = workload.spec.template.metadata.labels as Record<string, string>;
      assert.ok(
        objects('PodDisruptionBudget').some((pdb) => selects(pdb.spec.selector.matchLabels, labels)),
        `${kind} ${workload.metadata.name} has a PodDisruptionBudget`,
      );
    }
  }
});

test('deploy/kubernetes/kustomization.yaml lists every manifest but the spool drain Job template', () => {
  const [kustomization] = objects('Kustomization');
  const jobFiles = manifests.filter((m) => m.object.kind === 'Job').map((m) => m.file);
  const expected = manifestFiles.filter((f) => f !== 'kustomization.yaml' && !jobFiles.includes(f));
  assert.deepEqual([...(kustomization?.resources ?? [])].sort(), expected.sort());
});

// ---- the Sentinel Compose example -----------------------------------------------------------------------------------

interface ComposeService {
  build?: string;
  image?: string;
  command?: string[];
  environment?: Record<string, string | number>;
  ports?: string[];
  volumes?: string[];
  healthcheck?: { test: string[] };
  stop_grace_period?: string;
}
const SENTINEL_DIR = 'deploy/sentinel';
const sentinelCompose = parse(readFileSync(join(ROOT, SENTINEL_DIR, 'docker-compose.yml'), 'utf8'), {
  merge: true,
}) as { services: Record<string, ComposeService> };
const sentinelConf = readFileSync(join(ROOT, SENTINEL_DIR, 'sentinel.conf'), 'utf8');

/** A Compose value with the variables unset: `${NAME:-default}` becomes `default`. */
const unsetValue = (value: string | number) => String(value).replace(/\$\{[A-Z_]+:-([^}]*)\}/g, '$1');
const durationMs = (value: string) => Number(/^(\d+)s$/.exec(value)?.[1] ?? Number.NaN) * 1000;

test('the Sentinel Compose example: its services run commands of the CLI, set only variables the service reads, probe what they serve', async () => {
  const services = Object.entries(sentinelCompose.services).filter(([, s]) => s.build !== undefined);
  assert.deepEqual(services.map(([name]) => name).sort(), ['listener', 'worker']);
  const commands: string[] = [];
  for (const [name, service] of services) {
    const where = `${SENTINEL_DIR}/docker-compose.yml: ${name}`;
    assert.equal(service.build, '../..', `${where}: the image of the repository's Dockerfile`);
    assertEnvNames(where, Object.keys(service.environment ?? {}));
    const env = Object.fromEntries(Object.entries(service.environment ?? {}).map(([k, v]) => [k, unsetValue(v)]));
    const config = loadConfig({ ...IMAGE_ENV, ...env });
    assert.equal(config.redis.kind, 'sentinel', `${where}: through the Sentinels`);
    const args = cliArgs(where, service.command);
    await assertCliAccepts(where, args);
    commands.push(args.join(' '));

    const served = servedPaths(args, config);
    const url = /http:\/\/127\.0\.0\.1:(\d+)(\/[a-z]+)/.exec(service.healthcheck?.test.join(' ') ?? '');
    assert.ok(url, `${where}: a health check over HTTP`);
    assert.equal(url[2], '/readyz', `${where}: the health check is readiness`);
    assert.ok(served.get(Number(url[1]))?.has(url[2] ?? ''), `${where}: ${url[2]} on ${url[1]} is served there`);
    for (const published of service.ports ?? []) {
      const port = Number(unsetValue(published).split(':').at(-1));
      assert.equal(port, config.port, `${where}: publishes the webhook port only`);
      assert.ok(served.has(port), `${where}: port ${port} is served`);
    }
    assert.ok(
      durationMs(service.stop_grace_period ?? '') > config.shutdownTimeoutMs,
      `${where}: stop_grace_period > SHUTDOWN_TIMEOUT_MS`,
    );
    if (args[0] === 'listen') {
      assert.ok(
        (service.volumes ?? []).some((v) => /^[a-z-]+:/.test(v) && v.split(':')[1] === config.spool.dir),
        `${where}: a named volume at SPOOL_DIR (${config.spool.dir})`,
      );
    }
    // Every Sentinel it names is a service of the file, and the master's name is the one they monitor.
    if (config.redis.kind !== 'sentinel') continue;
    for (const { host, port } of config.redis.sentinels) {
      assert.ok(sentinelCompose.services[host] && port === 26379, `${where}: the Sentinel ${host}:${port}`);
    }
    assert.match(sentinelConf, new RegExp(`^sentinel monitor ${config.redis.masterName} `, 'm'));
  }
  assert.deepEqual(commands.sort(), ['listen', 'work']);
});

test('the Sentinel Compose example: a master and two replicas with AOF every second and noeviction, three Sentinels with quorum 2', () => {
  const services = sentinelCompose.services;
  const command = (name: string) => services[name]?.command?.join(' ') ?? '';
  for (const name of ['redis-master', 'redis-replica-1', 'redis-replica-2']) {
    assert.match(command(name), /--appendonly yes --appendfsync everysec --maxmemory-policy noeviction/, name);
  }
  for (const name of ['redis-replica-1', 'redis-replica-2']) assert.match(command(name), /replicaof redis-master 6379/);
  assert.doesNotMatch(command('redis-master'), /replicaof/);
  const sentinels = Object.keys(services).filter((name) => command(name).includes('--sentinel'));
  assert.deepEqual(sentinels, ['sentinel-1', 'sentinel-2', 'sentinel-3']);
  for (const name of sentinels) {
    // Sentinel rewrites its configuration: each one works on a copy in a volume of its own.
    assert.match(command(name), new RegExp(`announce-ip ${name}'`), name);
    assert.ok(services[name]?.volumes?.includes(`${name}-data:/data`), `${name}: a volume of its own`);
    assert.ok(services[name]?.volumes?.includes('./sentinel.conf:/etc/redis/sentinel.conf:ro'), name);
  }
  assert.match(sentinelConf, /^sentinel monitor mymaster redis-master 6379 2$/m);
  assert.ok(
    sentinelConf.search(/^sentinel resolve-hostnames yes$/m) < sentinelConf.search(/^sentinel monitor /m),
    'host names are resolved before the monitor line names the master by one',
  );
});
