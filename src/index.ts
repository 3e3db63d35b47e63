/**
 * What a handler module imports: `import { defineHandlers, PermanentError } from 'sellsy-webhooks'`.
 */
export type { WebhookJobData } from './queue/contract.ts';
export type { SellsyEvent } from './sellsy/payload.ts';
export {
  defineHandlers,
  type Handler,
  type HandlerContext,
  type HandlerMap,
  PermanentError,
  RetryLaterError,
} from './worker/handler.ts';
