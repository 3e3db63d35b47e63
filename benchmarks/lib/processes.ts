/**
 * The benchmark's child processes and temporary directories: every child it starts is SIGKILLed and every directory
 * removed when it exits, whatever the reason (an error, SIGINT, SIGTERM), so no server outlives a run.
 */
import { type ChildProcess, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { waitFor } from './wait.ts';

/** The project's root: child processes run there, dist/ and bench-results/ are there. */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

const children = new Set<ChildProcess>();
const tempDirs = new Set<string>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const child of children) if (isRunning(child)) child.kill('SIGKILL');
    for (const dir of tempDirs) {
      // A child killed a moment ago may still add a file (ENOTEMPTY): retried; one failure spares the other directories.
      try {
        rmSync(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 });
      } catch {
        process.stderr.write(`bench: could not remove ${dir}\n`);
      }
    }
  });
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(signal, () => {
      process.stderr.write(`\nbench: ${signal}, killing children\n`);
      process.exit(130);
    });
  }
}

/** A fresh directory under the system's temporary one, removed at exit whatever the reason (or by removeTempDir). */
export function makeTempDir(prefix: string): string {
  return removeAtExit(mkdtempSync(join(tmpdir(), prefix)));
}

/** Removes `dir` at exit unless removeTempDir did it before. */
export function removeAtExit(dir: string): string {
  tempDirs.add(dir);
  installExitHook();
  return dir;
}

export function removeTempDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  tempDirs.delete(dir);
}

/** Kills `child` at exit if it still runs then. */
export function track(child: ChildProcess): ChildProcess {
  installExitHook();
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

export function isRunning(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves once the child has exited. */
export async function stopChild(child: ChildProcess, graceMs = 5000): Promise<void> {
  if (!isRunning(child)) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

/** Keeps the last few KB a child wrote on a stream, for error messages. */
export function tail(stream: NodeJS.ReadableStream | null, limit = 4000): () => string {
  let text = '';
  stream?.on('data', (chunk: Buffer) => {
    text = (text + chunk.toString('utf8')).slice(-limit);
  });
  return () => text;
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Polls `GET url` until it answers 200, the child dies, or `timeoutMs` passes. */
export async function waitForHttp200(
  url: string,
  child: ChildProcess,
  timeoutMs: number,
  describe: () => string,
): Promise<void> {
  await waitFor(
    async () => {
      if (!isRunning(child))
        throw new Error(`child exited (${child.exitCode ?? child.signalCode}) before ${url} was ready\n${describe()}`);
      try {
        const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
        await res.arrayBuffer();
        return res.status === 200;
      } catch {
        return false; // not listening yet
      }
    },
    timeoutMs,
    `${url} to answer 200\n${describe()}`,
  );
}

/** A clean environment for a child process: nothing from the caller's shell (such as a SELLSY_SIGN_KEY) leaks in. */
export function baseEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const name of ['PATH', 'HOME', 'TMPDIR', 'LANG'])
    if (process.env[name] !== undefined) env[name] = process.env[name];
  return env;
}

/** Runs `npm run build` when `build` is set (or dist/ is missing and `buildIfMissing`), then checks dist/ is there. */
export function ensureBuilt(build: boolean, opts: { announce?: boolean; buildIfMissing?: boolean } = {}): void {
  const cli = join(ROOT, 'dist/src/cli.js');
  if (build || (opts.buildIfMissing && !existsSync(cli))) {
    if (opts.announce ?? true) process.stderr.write('bench: npm run build\n');
    const run = spawnSync('npm', ['run', 'build'], { cwd: ROOT, encoding: 'utf8' });
    if (run.status !== 0) throw new Error(`npm run build failed:\n${run.stdout}\n${run.stderr}`);
  }
  if (!existsSync(cli)) throw new Error('dist/src/cli.js is missing: run npm run build');
}

/** The end of a benchmark script: exit 0 (or process.exitCode) when `main` resolves, 1 with its stack if not. */
export function runMain(main: () => Promise<void>, prefix = '\nbench: '): void {
  main().then(
    () => process.exit(process.exitCode ?? 0),
    (err: unknown) => {
      process.stderr.write(`${prefix}${(err as Error)?.stack ?? String(err)}\n`);
      process.exit(1);
    },
  );
}
