/**
 * What a handler module imports: `import { defineHandlers, PermanentError } from 'sellsy-webhooks'`.
 */

export { PermanentError, RetryLaterError } from './errors.ts';
export { defineHandlers, type Handler, type HandlerContext, type HandlerMap } from './handlers/handler.ts';
export type { WebhookJobData } from './queue/contract.ts';
export type { SellsyEvent } from './sellsy/payload.ts';
