/** How the operator commands show ages, sizes and messages on a terminal line. */

/** `42 s`, `7 min`, `3.5 h`, `2.1 d`. */
export function formatAge(seconds: number): string {
  if (seconds < 120) return `${Math.round(seconds)} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172_800) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86_400).toFixed(1)} d`;
}

/** `0.00 MiB`, `12.3 GiB`. */
export function formatBytes(bytes: number): string {
  const GiB = 1024 ** 3;
  if (bytes >= GiB) return `${(bytes / GiB).toFixed(1)} GiB`;
  return `${(bytes / 1024 ** 2).toFixed(2)} MiB`;
}

/** A message on one line (a failed reason may hold a stack or a multi-line body), cut to `max` characters. */
export function oneLine(text: string, max = 160): string {
  const line = text.replace(/\s*[\r\n]+\s*/g, ' ').trim();
  return line.length <= max ? line : `${line.slice(0, max - 1)}…`;
}
