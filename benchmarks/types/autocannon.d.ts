/**
 * The part of autocannon 9's programmatic API that the benchmark uses (the package ships no types).
 * See node_modules/autocannon/README.md, "API".
 */
declare module 'autocannon' {
  import type { EventEmitter } from 'node:events';

  export interface AutocannonRequestData {
    method: string;
    path: string;
    headers: Record<string, string>;
    body?: string | Buffer;
  }

  export interface AutocannonRequest {
    method?: string;
    path?: string;
    headers?: Record<string, string>;
    body?: string | Buffer;
    /** Called before every request when present: return the request to send. */
    setupRequest?: (request: AutocannonRequestData, context: Record<string, unknown>) => AutocannonRequestData;
  }

  export interface AutocannonOptions {
    url: string;
    connections?: number;
    pipelining?: number;
    /** Seconds. */
    duration?: number;
    /** Seconds before a request counts as a timeout. */
    timeout?: number;
    method?: string;
    headers?: Record<string, string>;
    requests?: AutocannonRequest[];
  }

  export interface AutocannonResult {
    totalCompletedRequests: number;
    totalRequests: number;
    errors: number;
    timeouts: number;
    non2xx: number;
    resets: number;
    /** Seconds actually run. */
    duration: number;
    statusCodeStats: Record<string, { count: number }>;
    '2xx': number;
  }

  /** Emits `response` (client, statusCode, bytes, responseTimeMs) for each response; awaitable for the result. */
  export interface AutocannonInstance extends EventEmitter, PromiseLike<AutocannonResult> {
    stop(): void;
  }

  function autocannon(options: AutocannonOptions): AutocannonInstance;
  export default autocannon;
}
