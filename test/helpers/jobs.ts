/** Jobs as the listener writes them, for tests that build a spool or a queue directly. */
import type { WebhookJob } from '../../src/queue/contract.ts';

/** Delivery `i`: ids, body and receivedAt (2026-01-01T00:00:<i>Z) all derived from `i`. */
export function jobFixture(i: number, receivedAt = new Date(Date.UTC(2026, 0, 1, 0, 0, i)).toISOString()): WebhookJob {
  const rawBody = `{"relatedtype":"invoice","event":"step","relatedid":"${i}","corpid":"929"}`;
  return {
    name: 'invoice.step',
    data: {
      v: 1,
      deliveryId: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`,
      receivedAt,
      contentType: 'application/json',
      rawBody,
      account: '929',
      signature: { status: 'not_configured', header: null, scope: 'body' },
      event: null,
      parseProblem: null,
      dedupKey: `key-${i}`,
      request: { id: `req-${i}`, path: '/webhook/sellsy', ip: '127.0.0.1', userAgent: null },
    },
  };
}
