import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { test } from 'node:test';
import { hasForbiddenBytes, matchSignature, sign } from '../../src/sellsy/signature.ts';
import { extend, sha1Padding } from '../helpers/length-extension.ts';
import { KEY, VECTORS } from '../helpers/vectors.ts';

test('vector 1 (JSON, 163 bytes) signs to the published digest', () => {
  assert.equal(VECTORS.json.body.length, 163);
  assert.equal(sign(KEY, VECTORS.json.body), VECTORS.json.signature);
  assert.equal(matchSignature([KEY], VECTORS.json.body, VECTORS.json.signature), 0);
});

test('vector 2 (JSON with relatedobject and PHP escapes, 314 bytes) signs to the published digest', () => {
  assert.equal(VECTORS.jsonWithObject.body.length, 314);
  assert.equal(sign(KEY, VECTORS.jsonWithObject.body), VECTORS.jsonWithObject.signature);
  assert.equal(matchSignature([KEY], VECTORS.jsonWithObject.body, VECTORS.jsonWithObject.signature), 0);
});

test('vector 3 (form, 324 bytes) signs over the raw body and over the decoded notif value', () => {
  assert.equal(VECTORS.form.body.length, 324);
  assert.equal(sign(KEY, VECTORS.form.body), VECTORS.form.signature);
  const notif = new URLSearchParams(VECTORS.form.body.toString('latin1')).get('notif') as string;
  assert.equal(sign(KEY, notif), VECTORS.form.notifSignature);
  assert.equal(matchSignature([KEY], Buffer.from(notif), VECTORS.form.notifSignature), 0);
});

test('an HMAC-SHA1 of the body is rejected', () => {
  const hmac = createHmac('sha1', KEY).update(VECTORS.json.body).digest('hex');
  assert.equal(hmac, '2e6627af8acad38b54e07fe9dd3f8a2a4c9518d9');
  assert.equal(matchSignature([KEY], VECTORS.json.body, hmac), -1);
});

test('a wrong key, a missing header and a malformed header are rejected', () => {
  assert.equal(matchSignature(['OtherKey'], VECTORS.json.body, VECTORS.json.signature), -1);
  assert.equal(matchSignature([KEY], VECTORS.json.body, undefined), -1);
  assert.equal(matchSignature([KEY], VECTORS.json.body, ''), -1);
  assert.equal(matchSignature([KEY], VECTORS.json.body, VECTORS.json.signature.slice(0, 39)), -1);
  assert.equal(matchSignature([KEY], VECTORS.json.body, `${VECTORS.json.signature.slice(0, 39)}z`), -1);
});

test('one changed byte in the body breaks the signature', () => {
  const tampered = Buffer.from(VECTORS.json.body);
  tampered[tampered.length - 3] = 0x30;
  assert.equal(matchSignature([KEY], tampered, VECTORS.json.signature), -1);
});

test('rotation: any configured key matches and the index of the matching key is returned', () => {
  assert.equal(matchSignature(['NewKey', KEY], VECTORS.json.body, VECTORS.json.signature), 1);
  assert.equal(matchSignature([KEY, 'NewKey'], VECTORS.json.body, sign('NewKey', VECTORS.json.body)), 1);
  assert.equal(matchSignature(['A', 'B'], VECTORS.json.body, VECTORS.json.signature), -1);
});

test('upper-case hex and surrounding spaces in the header are accepted', () => {
  assert.equal(matchSignature([KEY], VECTORS.json.body, ` ${VECTORS.json.signature.toUpperCase()} `), 0);
});

test('a length extension of vector 1 made without the key carries a signature that matches under the key', () => {
  const forged = extend(VECTORS.json.body, VECTORS.json.signature, KEY.length, '}');
  // The forger only knew the key's length; node:crypto with the key agrees with the forged signature.
  assert.equal(sign(KEY, forged.body), forged.signature);
  assert.equal(matchSignature([KEY], forged.body, forged.signature), 0);
  assert.equal(forged.body[VECTORS.json.body.length], 0x80);
});

test('a length extension holds bytes Sellsy never sends; the test vectors and escaped JSON do not', () => {
  for (const vector of Object.values(VECTORS)) {
    assert.equal(hasForbiddenBytes(vector.body), false);
    assert.equal(hasForbiddenBytes(extend(vector.body, vector.signature, KEY.length, 'x').body), true);
    // Whatever the length of key and body, the padding holds a NUL (the high bytes of the bit length).
    for (let keyLength = 0; keyLength < 70; keyLength++) {
      assert.equal(hasForbiddenBytes(sha1Padding(keyLength + vector.body.length)), true);
    }
  }
  assert.equal(hasForbiddenBytes(Buffer.from('{"subject":"d\\u00e9cembre \\u0000 \\ud83d\\ude00","x":"é€😀"}')), false);
  assert.equal(hasForbiddenBytes(Buffer.from([0x7b, 0x80, 0x7d])), true, 'a lone continuation byte');
  assert.equal(hasForbiddenBytes(Buffer.from('{"a":"\0"}')), true, 'a NUL');
  // The decoded notif value (SIGNATURE_FORM_SCOPE=notif) is a string.
  assert.equal(hasForbiddenBytes('{"a":"b\0"}'), true);
  assert.equal(hasForbiddenBytes('{"a":"é"}'), false);
});
