/**
 * The machine the benchmark shares with its processes: CPU time per process and for the whole machine (Linux /proc),
 * a process's memory, waiting for a quiet machine, and the description printed with every result.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { ROOT, sleep } from './processes.ts';

let clockTicks = 100;
function setClockTicks(ticks: number): void {
  if (Number.isFinite(ticks) && ticks > 0) clockTicks = ticks;
}

/**
 * User + system CPU seconds consumed so far by `pid`, or NaN where /proc is unavailable. `children`: also those of
 * its children that have exited and been waited for (a Redis AOF rewrite, say: a fork that lasts a second or so).
 */
export function cpuSeconds(pid: number | undefined, children = false): number {
  if (pid === undefined) return NaN;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which is in parentheses and may contain spaces).
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const own = Number(fields[11]) + Number(fields[12]);
    return (children ? own + Number(fields[13]) + Number(fields[14]) : own) / clockTicks;
  } catch {
    return NaN;
  }
}

/** CPU seconds so far of every process whose command is `name` (e.g. every PostgreSQL backend), by pid. */
export function cpuSecondsOfCommand(name: string): Map<number, number> {
  const byPid = new Map<number, number>();
  let entries: string[] = [];
  try {
    entries = readdirSync('/proc').filter((e) => /^\d+$/.test(e));
  } catch {
    return byPid;
  }
  for (const entry of entries) {
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')) === name)
        byPid.set(Number(entry), cpuSeconds(Number(entry)));
    } catch {
      // gone meanwhile
    }
  }
  return byPid;
}

/** CPU seconds the whole machine spent busy so far (all cores; /proc/stat), or NaN. */
function machineBusySeconds(): number {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] ?? '';
    // cpu  user nice system idle iowait irq softirq steal guest guest_nice
    const v = line.trim().split(/\s+/).slice(1).map(Number);
    const busy = (v[0] ?? 0) + (v[1] ?? 0) + (v[2] ?? 0) + (v[5] ?? 0) + (v[6] ?? 0) + (v[7] ?? 0);
    return busy / clockTicks;
  } catch {
    return NaN;
  }
}

/** A process's resident memory now (VmRSS) or at its peak (VmHWM), in kB; NaN where /proc is unavailable. */
export function memoryKb(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : NaN;
  } catch {
    return NaN;
  }
}

/**
 * CPU used between construction and `read`, in % of one core: by each named process, by each group of processes
 * found when read (`groups`: pid → CPU seconds so far, e.g. every PostgreSQL backend), and by the rest of the
 * machine (`other`: foreign load, kernel time charged to nobody; tens of % means a disturbed run).
 */
export class CpuMeter<K extends string, G extends string = never> {
  private readonly t0 = performance.now();
  private readonly machine0 = machineBusySeconds();
  private readonly start: Record<string, number> = {};
  private readonly groupStart: Record<string, Map<number, number>> = {};
  constructor(
    private readonly pids: Record<K, number | undefined>,
    private readonly groups: Record<G, () => Map<number, number>> = {} as Record<G, () => Map<number, number>>,
  ) {
    for (const [name, pid] of Object.entries<number | undefined>(pids)) this.start[name] = cpuSeconds(pid);
    for (const [name, sample] of Object.entries<() => Map<number, number>>(groups)) this.groupStart[name] = sample();
  }
  read(): Record<K | G | 'other', number> {
    const wall = (performance.now() - this.t0) / 1000;
    const use: Record<string, number> = {};
    for (const [name, pid] of Object.entries<number | undefined>(this.pids)) {
      use[name] = ((cpuSeconds(pid) - (this.start[name] as number)) / wall) * 100;
    }
    // Group members that started during the window count from 0; those that ended are missed.
    for (const [name, sample] of Object.entries<() => Map<number, number>>(this.groups)) {
      let seconds = 0;
      for (const [pid, cpu] of sample()) seconds += cpu - (this.groupStart[name]?.get(pid) ?? 0);
      use[name] = (seconds / wall) * 100;
    }
    const ours = Object.values(use)
      .filter(Number.isFinite)
      .reduce((a, b) => a + b, 0);
    const machine = ((machineBusySeconds() - this.machine0) / wall) * 100;
    return { ...use, other: Math.max(0, machine - ours) } as Record<K | G | 'other', number>;
  }
}

/** Machine-wide CPU use over `ms`, in % of one core. */
export async function busyPct(ms: number): Promise<number> {
  const before = machineBusySeconds();
  await sleep(ms);
  return ((machineBusySeconds() - before) * 100_000) / ms;
}

/** Below this machine-wide CPU use (% of one core) while we are idle, the machine counts as quiet. */
export const QUIET_PCT = 25;

/**
 * Waits (at most `maxS`) until the machine is quiet while nothing of ours runs: on a shared 2-core machine another
 * job (a test suite, a build) can halve a target's throughput and make the comparison meaningless.
 */
export async function waitForQuiet(maxS: number): Promise<{ ok: boolean; busy: number }> {
  const deadline = Date.now() + maxS * 1000;
  let announced = false;
  for (;;) {
    const busy = await busyPct(500);
    if (busy < QUIET_PCT) {
      if (announced) process.stderr.write(' quiet now\n');
      return { ok: true, busy };
    }
    if (Date.now() > deadline) {
      if (announced) process.stderr.write(' giving up\n');
      return { ok: false, busy };
    }
    if (!announced)
      process.stderr.write(`bench: machine busy (${busy.toFixed(0)}% of a core), waiting up to ${maxS} s ...`);
    announced = true;
  }
}

export interface MachineInfo {
  node: string;
  nproc: string;
  cpuModel: string;
  date: string;
  commit: string;
  srcDirty: boolean;
}

/** Node, cores, CPU model, commit: printed with every result. Also reads the clock tick that cpuSeconds needs. */
export function machineInfo(): MachineInfo {
  const cpuinfo = existsSync('/proc/cpuinfo') ? readFileSync('/proc/cpuinfo', 'utf8') : '';
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? 'unknown';
  let nproc = String(availableParallelism());
  try {
    nproc = execFileSync('nproc', { encoding: 'utf8' }).trim();
  } catch {
    // keep availableParallelism()
  }
  let commit = 'unknown';
  let srcDirty = false;
  try {
    commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
    srcDirty =
      execFileSync('git', ['status', '--porcelain', '--', 'src'], { cwd: ROOT, encoding: 'utf8' }).trim() !== '';
  } catch {
    // not a git checkout
  }
  try {
    setClockTicks(Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()));
  } catch {
    // assume 100
  }
  return { node: process.version, nproc, cpuModel: model, date: new Date().toISOString(), commit, srcDirty };
}
