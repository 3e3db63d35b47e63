import assert from 'node:assert/strict';
import { test } from 'node:test';
import { bodyFormat, isPattern, jobNameOf, matches, parseDelivery } from '../../src/sellsy/payload.ts';
import { VECTORS } from '../helpers/vectors.ts';

const FORM = 'application/x-www-form-urlencoded';
const JSON_TYPE = 'application/json';

test('a JSON delivery parses into typed fields with ids and timestamp kept as strings', () => {
  const parsed = parseDelivery(VECTORS.json.body, JSON_TYPE);
  assert.equal(parsed.problem, null);
  assert.deepEqual(parsed.event, {
    eventType: 'docslog',
    event: 'step',
    relatedType: 'estimate',
    relatedId: '52437688',
    ownerType: 'staff',
    ownerId: '1084',
    corpId: '929',
    timestamp: '1778187955',
    extra: {},
  });
  assert.equal(jobNameOf(parsed.event), 'estimate.step');
});

test('relatedobject is kept with its PHP escapes decoded', () => {
  const parsed = parseDelivery(VECTORS.jsonWithObject.body, 'application/json; charset=utf-8');
  assert.deepEqual(parsed.event?.relatedObject, {
    id: 987654,
    number: 'FAC-2026-0042',
    status: 'paid',
    subject: 'Prestation décembre',
    pdf_link: 'https://example.invalid/x.pdf',
  });
  assert.equal(jobNameOf(parsed.event), 'invoice.step');
});

test('a form delivery parses the notif field and keeps extra keys such as thirdtype and individual', () => {
  const parsed = parseDelivery(VECTORS.form.body, FORM);
  assert.equal(parsed.format, 'form');
  assert.equal(parsed.event?.relatedType, 'third');
  assert.equal(parsed.event?.corpId, '138');
  assert.deepEqual(parsed.event?.extra, { thirdtype: 'client', individual: false });
  assert.equal(parsed.notif?.startsWith('{"eventType":"thirdlog"'), true);
  assert.equal(jobNameOf(parsed.event), 'third.updated');
});

test('unknown event types and extra keys are accepted', () => {
  const body = Buffer.from(
    '{"eventType":"newfamily","event":"teleported","relatedtype":"spaceship","relatedid":"1","corpid":"7","timestamp":"1","foo":{"bar":1}}',
  );
  const parsed = parseDelivery(body, JSON_TYPE);
  assert.equal(parsed.problem, null);
  assert.equal(jobNameOf(parsed.event), 'spaceship.teleported');
  assert.deepEqual(parsed.event?.extra, { foo: { bar: 1 } });
});

test('an empty object parses but names no job', () => {
  const parsed = parseDelivery(Buffer.from('{}'), JSON_TYPE);
  assert.equal(parsed.problem, null);
  assert.equal(jobNameOf(parsed.event), 'unknown');
});

test('the original design example {"event":"invoice.paid"} keeps its dotted name', () => {
  const parsed = parseDelivery(
    Buffer.from('{"event":"invoice.paid","data":{"id":123,"customer":"Acme Corp"}}'),
    JSON_TYPE,
  );
  assert.equal(jobNameOf(parsed.event), 'invoice.paid');
  assert.deepEqual(parsed.event?.extra, { data: { id: 123, customer: 'Acme Corp' } });
});

test('invalid JSON, a form without notif, non-objects and other content types are problems, not exceptions', () => {
  assert.equal(parseDelivery(Buffer.from('{"event":'), JSON_TYPE).problem, 'invalid_json');
  assert.equal(parseDelivery(Buffer.from(''), JSON_TYPE).problem, 'invalid_json');
  assert.equal(parseDelivery(Buffer.from('foo=bar'), FORM).problem, 'form_without_notif');
  assert.equal(parseDelivery(Buffer.from('notif=%7Bnope'), FORM).problem, 'invalid_json');
  assert.equal(parseDelivery(Buffer.from('[1,2]'), JSON_TYPE).problem, 'not_an_object');
  assert.equal(parseDelivery(Buffer.from('"str"'), JSON_TYPE).problem, 'not_an_object');
  assert.equal(parseDelivery(VECTORS.json.body, 'text/plain').problem, 'unsupported_content_type');
  assert.equal(parseDelivery(VECTORS.json.body, undefined).problem, 'unsupported_content_type');
  assert.equal(jobNameOf(null), 'unknown');
});

test('job names with unsafe characters fall back to unknown', () => {
  const parsed = parseDelivery(Buffer.from('{"relatedtype":"in voice","event":"step"}'), JSON_TYPE);
  assert.equal(jobNameOf(parsed.event), 'unknown');
  const numeric = parseDelivery(Buffer.from('{"relatedtype":"invoice","event":"step","relatedid":42}'), JSON_TYPE);
  assert.equal(numeric.event?.relatedId, '42');
});

test('content types are recognised by media type, case-insensitively and with parameters', () => {
  assert.equal(bodyFormat('Application/JSON; charset=UTF-8'), 'json');
  assert.equal(bodyFormat('application/vnd.api+json'), 'json');
  assert.equal(bodyFormat('application/x-www-form-urlencoded; charset=utf-8'), 'form');
  assert.equal(bodyFormat('multipart/form-data'), 'other');
});

test('regression: keys named after Object members are kept as data (constructor, toString, __proto__)', () => {
  const parsed = parseDelivery(
    Buffer.from(
      '{"relatedtype":"invoice","event":"step","constructor":"x","toString":"y","__proto__":{"polluted":true}}',
    ),
    JSON_TYPE,
  );
  assert.equal(parsed.problem, null);
  const extra = parsed.event?.extra as Record<string, unknown>;
  assert.equal(extra.constructor, 'x');
  assert.equal(extra.toString, 'y');
  assert.deepEqual(Object.getOwnPropertyDescriptor(extra, '__proto__')?.value, { polluted: true });
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
  assert.match(JSON.stringify(parsed.event), /"__proto__":\{"polluted":true\}/);
});

test('regression: a form body with two notif fields is ambiguous_notif, read as neither event', () => {
  const other = encodeURIComponent('{"relatedtype":"invoice","event":"deleted","relatedid":"1","corpid":"138"}');
  for (const body of [
    `${VECTORS.form.body}&notif=${other}`,
    `notif=${other}&${VECTORS.form.body}`,
    // The field name is percent-decoded like its value: `n%6Ftif` is `notif` to every form parser.
    `${VECTORS.form.body}&n%6Ftif=${other}`,
  ]) {
    const parsed = parseDelivery(Buffer.from(body), FORM);
    assert.deepEqual(
      [parsed.format, parsed.event, parsed.problem, parsed.notif],
      ['form', null, 'ambiguous_notif', null],
      body,
    );
    assert.equal(jobNameOf(parsed.event), 'unknown');
  }
});

test('patterns: exact names, <type>.*, *.<verb>, * for every parsed event, unknown only by name', () => {
  assert.ok(matches('invoice.step', 'invoice.step'));
  assert.ok(!matches('invoice.step', 'invoice.created'));
  assert.ok(matches('invoice.*', 'invoice.created'));
  assert.ok(!matches('invoice.*', 'estimate.created'));
  assert.ok(matches('*.deleted', 'third.deleted'));
  assert.ok(!matches('*.deleted', 'third.updated'));
  assert.ok(matches('*', 'people.updated'));
  assert.ok(!matches('*', 'unknown'));
  assert.ok(!matches('*.*', 'unknown'));
  assert.ok(matches('unknown', 'unknown'));
});

test('a pattern is a job name, <type>.*, *.<verb>, * or unknown, and nothing else', () => {
  for (const pattern of ['invoice.step', 'invoice.*', '*.deleted', '*.*', '*', 'unknown']) {
    assert.ok(isPattern(pattern), pattern);
  }
  for (const pattern of ['', 'invoice', 'invoice.', '.step', 'in*voice.step', 'a.b.c', 'invoice .step', '**']) {
    assert.ok(!isPattern(pattern), pattern);
  }
});
