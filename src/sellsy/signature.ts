/**
 * Sellsy webhook signature: `X-Webhook-Signature` = lowercase hex of `sha1(sign_key + raw_body)`.
 *
 * Not an HMAC (see shared protocol notes: integrations that used HMAC-SHA1 failed on live traffic).
 * The digest is computed over the bytes exactly as received; re-serialising parsed JSON would change
 * them (Sellsy escapes `/` and non-ASCII characters). Keys are checked once, at configuration time.
 */
import { isUtf8 } from 'node:buffer';
import { createHash, timingSafeEqual } from 'node:crypto';

export const SIGNATURE_HEADER = 'x-webhook-signature';

/** Computes the signature Sellsy would send for `body` with `key`. Public so tests can build fixtures. */
export function sign(key: string, body: Buffer | string): string {
  return createHash('sha1').update(key, 'utf8').update(body).digest('hex');
}

const SIGNATURE_SHAPE = /^[0-9a-fA-F]{40}$/;

/**
 * Returns the index of the first key whose signature matches `header`, or -1.
 * Every key is compared (no early exit on the first mismatch) in constant time per key, so timing
 * tells an attacker nothing about which key or which prefix is right.
 */
export function matchSignature(keys: readonly string[], body: Buffer | string, header: string | undefined): number {
  if (header === undefined) return -1;
  const received = header.trim();
  if (!SIGNATURE_SHAPE.test(received)) return -1;
  const receivedBytes = Buffer.from(received.toLowerCase(), 'hex');
  let match = -1;
  for (let i = 0; i < keys.length; i++) {
    const expected = createHash('sha1')
      .update(keys[i] as string, 'utf8')
      .update(body)
      .digest();
    if (timingSafeEqual(expected, receivedBytes) && match === -1) match = i;
  }
  return match;
}

/**
 * Whether signed bytes hold what Sellsy never sends: invalid UTF-8 or a NUL byte.
 *
 * `sha1(key + body)` can be extended without the key: from one signed body, anyone can compute a valid signature for
 * `body + padding + suffix`. The padding is a `0x80` byte, `0x00` bytes and the 64-bit bit length (whose high bytes
 * are `0x00` for any body under 2^53 bytes), so every such forgery holds a NUL and, after Sellsy's ASCII or UTF-8
 * bytes, an invalid UTF-8 sequence. Sellsy's JSON escapes control characters and its form bodies percent-encode
 * them: a genuine delivery holds neither.
 */
export function hasForbiddenBytes(bytes: Buffer | string): boolean {
  // A string (the decoded `notif`) is hashed as its UTF-8 encoding, which is always valid UTF-8: the decoding already
  // replaced invalid sequences, which breaks any extension made over them. Only a NUL can remain.
  if (typeof bytes === 'string') return bytes.includes('\0');
  return bytes.includes(0) || !isUtf8(bytes);
}
