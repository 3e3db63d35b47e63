/**
 * SHA-1 length extension, as an attacker runs it against `sha1(key + body)` signatures: from one signed body and the
 * key's length (not the key), the signature of `body + padding + suffix`.
 *
 * Written here because node:crypto cannot start a hash from a given state; it is the textbook SHA-1 compression
 * (FIPS 180-4), checked against node:crypto by the tests that use it.
 */

/** The padding SHA-1 appends to a message of `length` bytes: 0x80, zeros, the length in bits (64-bit big-endian). */
export function sha1Padding(length: number): Buffer {
  const zeros = (55 - (length % 64) + 64) % 64;
  const padding = Buffer.alloc(1 + zeros + 8);
  padding[0] = 0x80;
  padding.writeBigUInt64BE(BigInt(length) * 8n, 1 + zeros);
  return padding;
}

function compress(state: Uint32Array, block: Buffer): void {
  const w = new Uint32Array(80);
  for (let i = 0; i < 16; i++) w[i] = block.readUInt32BE(i * 4);
  for (let i = 16; i < 80; i++) {
    const x = (w[i - 3] as number) ^ (w[i - 8] as number) ^ (w[i - 14] as number) ^ (w[i - 16] as number);
    w[i] = (x << 1) | (x >>> 31);
  }
  let [a, b, c, d, e] = state as unknown as [number, number, number, number, number];
  for (let i = 0; i < 80; i++) {
    let f: number;
    let k: number;
    if (i < 20) {
      f = (b & c) | (~b & d);
      k = 0x5a827999;
    } else if (i < 40) {
      f = b ^ c ^ d;
      k = 0x6ed9eba1;
    } else if (i < 60) {
      f = (b & c) | (b & d) | (c & d);
      k = 0x8f1bbcdc;
    } else {
      f = b ^ c ^ d;
      k = 0xca62c1d6;
    }
    const t = (((a << 5) | (a >>> 27)) + f + e + k + (w[i] as number)) >>> 0;
    e = d;
    d = c;
    c = ((b << 30) | (b >>> 2)) >>> 0;
    b = a;
    a = t;
  }
  state[0] = ((state[0] as number) + a) >>> 0;
  state[1] = ((state[1] as number) + b) >>> 0;
  state[2] = ((state[2] as number) + c) >>> 0;
  state[3] = ((state[3] as number) + d) >>> 0;
  state[4] = ((state[4] as number) + e) >>> 0;
}

/** SHA-1 resumed from `digestHex`, the state after `processed` bytes (a multiple of 64), over `more`. */
function resume(digestHex: string, processed: number, more: Buffer): string {
  const digest = Buffer.from(digestHex, 'hex');
  const state = new Uint32Array(5);
  for (let i = 0; i < 5; i++) state[i] = digest.readUInt32BE(i * 4);
  const message = Buffer.concat([more, sha1Padding(processed + more.length)]);
  for (let offset = 0; offset < message.length; offset += 64) compress(state, message.subarray(offset, offset + 64));
  const out = Buffer.alloc(20);
  for (let i = 0; i < 5; i++) out.writeUInt32BE(state[i] as number, i * 4);
  return out.toString('hex');
}

/**
 * Forges a body and its signature from a genuine one: `body + padding + suffix`, signed as `sha1(key + that)`
 * would be, knowing only `keyLength`.
 */
export function extend(
  body: Buffer,
  signature: string,
  keyLength: number,
  suffix: Buffer | string,
): { body: Buffer; signature: string } {
  const padding = sha1Padding(keyLength + body.length);
  const tail = Buffer.from(suffix);
  return {
    body: Buffer.concat([body, padding, tail]),
    signature: resume(signature, keyLength + body.length + padding.length, tail),
  };
}
