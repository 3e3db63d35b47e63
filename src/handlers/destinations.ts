/**
 * The built-in `forward` with destinations (`DESTINATIONS_FILE`, or `FORWARD_URL` as the destination `default`):
 * each event is sent to every destination whose `events` patterns match its job name, each request exactly as
 * `forward` sends one (src/handlers/forward.ts: same body, `webhook-id` = the delivery id, signed with that
 * destination's secrets).
 *
 * Delivery semantics (docs/destinations.md):
 * - the destinations of one event are sent to at once: a slow or failing one never delays the others;
 * - an attempt where some destination fails records which destinations took the event (src/queue/destination-
 *   ledger.ts) and fails the job, which is retried with its backoff; a retry sends only to the destinations that
 *   have not taken it, so each gets the event once however many attempts another needs;
 * - a destination answering a status that retrying cannot fix (4xx, 3xx) is not sent to again within the job's
 *   attempts; once no destination is left to retry, the job fails for good (a dead letter) naming it;
 * - when the attempts run out, the dead letter's failed reason names the destinations still failing (and those
 *   that took the event). A replay sends again only to destinations that had not taken it.
 * With a single destination configured nothing is recorded: the job's outcome is that destination's, and errors are
 * the `forward` ones, unchanged.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { type Destination, takesEvent } from '../config/destinations.ts';
import { PermanentError } from '../errors.ts';
import type { BreakerDecision, DestinationBreaker } from '../queue/destination-breaker.ts';
import type { DestinationLedger, LedgerEntry } from '../queue/destination-ledger.ts';
import { createForwardHandler } from './forward.ts';
import type { Handler, HandlerContext } from './handler.ts';

/** What each request to a destination did, for the metrics. */
export interface DestinationObserver {
  sent(destination: string, seconds: number): void;
  failed(destination: string, seconds: number): void;
  /** The circuit breaker's state as this worker last saw it. */
  breaker?(destination: string, open: boolean): void;
}

export interface FanOutOptions {
  destinations: readonly Destination[];
  /** Needed with more than one destination. */
  ledger: DestinationLedger | null;
  /** Shared by the workers; null: no breaker (tests of the handler alone). */
  breaker?: DestinationBreaker | null;
  observer?: DestinationObserver;
}

interface Target {
  name: string;
  events: readonly string[];
  send: Handler;
  pace: Pace | null;
  breakerFailures: number;
  probeMs: number;
}

/**
 * At most `perSecond` requests a second from this process: each send takes the next free slot and waits for it.
 * Per worker process, not shared between processes.
 */
class Pace {
  private next = 0;
  private readonly intervalMs: number;
  constructor(perSecond: number) {
    this.intervalMs = 1000 / perSecond;
  }
  async wait(signal: AbortSignal): Promise<void> {
    const now = performance.now();
    const at = Math.max(now, this.next);
    this.next = at + this.intervalMs;
    if (at > now) await sleep(at - now, undefined, { signal });
  }
}

/** The patterns to register the handler under: `*` and `unknown` only if some destination takes them. */
export function fanOutPatterns(destinations: readonly Destination[]): string[] {
  const events = destinations.flatMap((d) => d.events);
  return [...(events.some((p) => p !== 'unknown') ? ['*'] : []), ...(events.includes('unknown') ? ['unknown'] : [])];
}

export function createFanOutHandler(opts: FanOutOptions): Handler {
  const targets: Target[] = opts.destinations.map((d) => ({
    name: d.name,
    events: d.events,
    send: createForwardHandler({ url: d.url, secret: d.secrets, timeoutMs: d.timeoutMs }),
    pace: d.maxPerSecond === null ? null : new Pace(d.maxPerSecond),
    breakerFailures: d.breakerFailures,
    probeMs: d.breakerProbeSeconds * 1000,
  }));
  const breaker = opts.breaker ?? null;
  const single = targets.length === 1;
  if (!single && opts.ledger === null) throw new Error('forward: several destinations need a ledger');
  const observer = opts.observer;

  /** One request to one destination, timed, logged with its name; rejects as `forward` does. */
  async function sendTo(target: Target, event: Parameters<Handler>[0], context: HandlerContext): Promise<void> {
    const log = context.log.child({ destination: target.name });
    const ctx: HandlerContext = { ...context, log };
    const decision = await decide(target, log);
    await target.pace?.wait(context.signal);
    const started = performance.now();
    try {
      await target.send(event, ctx);
    } catch (err) {
      const seconds = (performance.now() - started) / 1000;
      observer?.failed(target.name, seconds);
      // `destination` comes from the child logger's bindings.
      log.warn({ attempt: context.attempt, err: (err as Error).message }, 'destination failed');
      // A refusal is an answer from a working destination; a shutdown says nothing of it.
      if (breaker && !(err instanceof PermanentError) && !context.signal.aborted) {
        const open = await breaker.failure(target.name, target.breakerFailures, target.probeMs).catch(() => null);
        if (open !== null) observer?.breaker?.(target.name, open);
        if (open && decision.state === 'closed') {
          log.warn({ failures: target.breakerFailures }, 'circuit breaker open: requests paused, probing');
        }
      }
      throw err;
    }
    observer?.sent(target.name, (performance.now() - started) / 1000);
    if (breaker && (decision.state !== 'closed' || decision.dirty)) {
      const wasOpen = await breaker.success(target.name).catch(() => null);
      if (wasOpen !== null) observer?.breaker?.(target.name, false);
      if (wasOpen) log.info('circuit breaker closed: the destination answered');
    }
  }

  /** Whether to send: throws, without a request, while the breaker is open and this is not the probe's turn. */
  async function decide(target: Target, log: HandlerContext['log']): Promise<BreakerDecision> {
    if (!breaker) return { state: 'closed', dirty: false };
    let decision: BreakerDecision;
    try {
      decision = await breaker.before(target.name, target.probeMs);
    } catch (err) {
      // Redis unreadable: send, as without a breaker (the job needs Redis anyway).
      log.warn({ err: (err as Error).message }, 'circuit breaker unreadable: sending');
      return { state: 'closed', dirty: false };
    }
    observer?.breaker?.(target.name, decision.state !== 'closed');
    if (decision.state === 'open') {
      throw new Error(
        `destination ${target.name} paused: circuit breaker open after ${decision.failures} consecutive failures, ` +
          `next probe in ${Math.ceil(decision.probeInMs / 1000)} s (no request sent)`,
      );
    }
    return decision;
  }

  /**
   * A catch-up job of `replay --destination`: that destination alone; its success is recorded so that a later
   * replay of the dead letter does not send it there again.
   */
  async function sendOnly(name: string, event: Parameters<Handler>[0], context: HandlerContext): Promise<void> {
    const target = targets.find((t) => t.name === name);
    if (target === undefined) {
      throw new PermanentError(`destination ${JSON.stringify(name)} is not configured in this worker`);
    }
    await sendTo(target, event, context);
    if (!single) {
      await (opts.ledger as DestinationLedger)
        .record(context.deliveryId, new Map([[name, 'sent']]))
        .catch((err: Error) => context.log.warn({ err: err.message }, 'destinations: could not record the catch-up'));
    }
  }

  return async (event, context) => {
    const only = context.data.onlyDestination;
    if (only !== undefined) {
      await sendOnly(only, event, context);
      return;
    }
    const matching = targets.filter((t) => takesEvent(t, context.name));
    if (matching.length === 0) return;
    if (single) {
      await sendTo(matching[0] as Target, event, context);
      return;
    }
    const ledger = opts.ledger as DestinationLedger;
    const known = matching.length > 1 ? await ledger.read(context.deliveryId) : new Map<string, LedgerEntry>();
    // A refusal holds for the job's attempts; a new run of them (a replay: attempt 1 again) asks again.
    const fresh = context.attempt === 1;
    const pending = matching.filter((t) => {
      const entry = known.get(t.name);
      return entry === undefined || (entry !== 'sent' && fresh);
    });
    const results = await Promise.allSettled(pending.map((t) => sendTo(t, event, context)));

    const entries = new Map<string, LedgerEntry>();
    const failing: string[] = [];
    const refused: string[] = [];
    results.forEach((result, i) => {
      const { name } = pending[i] as Target;
      if (result.status === 'fulfilled') {
        entries.set(name, 'sent');
        return;
      }
      const message = (result.reason as Error)?.message ?? String(result.reason);
      if (result.reason instanceof PermanentError) {
        entries.set(name, `refused: ${message}`);
        refused.push(`${name} (${message})`);
      } else {
        failing.push(`${name} (${message})`);
      }
    });
    for (const t of matching) {
      const entry = known.get(t.name);
      if (entry?.startsWith('refused: ') && !pending.includes(t)) refused.push(`${t.name} (${entry.slice(9)})`);
    }
    if (failing.length === 0 && refused.length === 0) {
      if (known.size > 0) await ledger.forget(context.deliveryId);
      return;
    }
    if (matching.length > 1 && (entries.size > 0 || known.size > 0)) {
      try {
        await ledger.record(context.deliveryId, entries);
      } catch (err) {
        // The next attempt then sends to every destination again (same webhook-id): late rather than lost.
        context.log.warn({ err: (err as Error).message }, 'destinations: could not record which ones took the event');
      }
    }
    const took = matching.filter((t) => entries.get(t.name) === 'sent' || known.get(t.name) === 'sent');
    const tail = took.length > 0 ? `; sent to ${took.map((t) => t.name).join(', ')}` : '';
    if (failing.length > 0) {
      const refusedPart = refused.length > 0 ? `; refused for good: ${refused.join('; ')}` : '';
      throw new Error(`destinations still failing: ${failing.join('; ')}${refusedPart}${tail}`);
    }
    throw new PermanentError(`destinations refused the event: ${refused.join('; ')}${tail}`);
  };
}
