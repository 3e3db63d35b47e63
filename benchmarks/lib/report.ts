/** How the benchmarks print figures: fixed digits, plain-text tables, durations, results written as JSON. */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { ROOT } from './processes.ts';

/** A figure for a table: fixed digits, `-` when not a number. */
export const f = (v: number, digits = 2) => (Number.isFinite(v) ? v.toFixed(digits) : '-');

/** Each round's figure, `a / b / c`. */
export const joinRounds = (values: number[], digits: number) => values.map((v) => f(v, digits)).join(' / ');

export const minutes = (s: number) => `${Math.floor(s / 60)} min ${String(Math.round(s % 60)).padStart(2, '0')} s`;

/** A plain-text table: the first column left-aligned, the others right-aligned. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('  ');
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

/** Writes `data` to bench-results/<name>-<date>.json; returns the path relative to the project's root. */
export function writeResults(name: string, date: string, data: unknown): string {
  const file = join(ROOT, 'bench-results', `${name}-${date.replace(/[:.]/g, '-')}.json`);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, `${JSON.stringify(data, null, 2)}\n`);
  return file.slice(ROOT.length + 1);
}
