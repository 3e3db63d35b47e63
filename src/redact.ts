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

/**
 * What may be shown of an endpoint URL (a destination, a Sellsy webhook): its origin and path. A query string, user
 * info or fragment may hold a token. Throws on an unparsable URL: the callers hold checked ones.
 */
export function shownUrl(url: string | URL): string {
  const u = typeof url === 'string' ? new URL(url) : url;
  return `${u.origin}${u.pathname}`;
}
