/** What may be shown of a URL that can hold a password (REDIS_URL, DATABASE_URL…): the password as `***`. */
export function redactUrl(url: string, what = 'the URL'): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    // An unparsable value is not shown at all: it could be a password typed in the wrong variable.
    return `(${what}, not a URL)`;
  }
}
