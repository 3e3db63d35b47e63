/**
 * The built-in `forward` with destinations (`DESTINATIONS_FILE`, or `FORWARD_URL` as the destination `default`):
 * each event is sent to every destination whose `events` patterns match its job name, each request exactly as
 * `forward` sends one (src/handlers/forward.ts: same body, `webhook-id` = the delivery id, signed with that
 * destination's secrets).
 *
 * Delivery semantics (docs/destinations.md):
 * - the destinations of one event are sent to at once, from the event's job: a slow or failing one never delays
 *   the others;
 * - a destination that does not take the event (a failure, a refusal, an open circuit breaker) is handed a retry job
 *   of its own (src/queue/destination-retries.ts) with its own attempts, backoff and dead letter; the ledger
 *   (src/queue/destination-ledger.ts) is written first, so that a run of the job again (a crash) sends to no
 *   destination twice; the event's job then goes on (user handlers) and completes;
 * - a retry job sends to its destination alone; a refusal fails it at once (its dead letter), without a request;
 * - while a destination's breaker is open, its requests are not made: the job is postponed to the next probe
 *   (`PostponeError`), without spending an attempt, until it is `breaker_max_pause_seconds` old; the postponed jobs
 *   wake spread over a short window after the probe time, so that they do not all run at once.
 * Without a ledger and retry jobs (`FORWARD_URL` alone, one destination) nothing is recorded and no retry job made:
 * the event's job is the destination's, and errors are the `forward` ones, unchanged.
 *
 * `prepare` runs in the worker before the job's chain (`sellsy-fetch` then `forward`) of a job whose only
 * destination is known: it picks the event to send (the newest one handed to a retry job) and postpones the job
 * while the breaker is open, before `sellsy-fetch` calls the Sellsy API for an event that would not be sent.
 */
import { getMaxListeners, setMaxListeners } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Destination, takesEvent } from '../config/destinations.ts';
import { PermanentError, PostponeError, RetryLaterError } from '../errors.ts';
import type { WebhookJobData } from '../queue/contract.ts';
import type { BreakerDecision, DestinationBreaker } from '../queue/destination-breaker.ts';
import type { DestinationLedger, LedgerEntry } from '../queue/destination-ledger.ts';
import type { DestinationRetries } from '../queue/destination-retries.ts';
import { createForwardSender, type ForwardSender, forwardBodyOf } from './forward.ts';
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
  /** Needed with more than one destination. */
  retries: DestinationRetries | null;
  /** Shared by the workers; null: no breaker (tests of the handler alone). */
  breaker?: DestinationBreaker | null;
  observer?: DestinationObserver;
}

/** The fan-out of one list of destinations. */
export interface FanOut {
  handler: Handler;
  /**
   * Before the chain of a job bound for one destination (a retry or catch-up job; an event's job without a ledger):
   * the event to run it on, or a `PostponeError` while that destination's breaker is open and its probe not due.
   * Reads the breaker without taking the probe: `forward` takes it when the probe is due.
   */
  prepare(
    name: string,
    data: WebhookJobData,
    log: HandlerContext['log'],
  ): Promise<{ name: string; data: WebhookJobData }>;
}

/** The widest spread of the wake-ups of the jobs postponed to one probe time. */
const MAX_WAKE_SPREAD_MS = 5000;

interface Target {
  name: string;
  events: readonly string[];
  send: ForwardSender;
  pace: Pace | null;
  breakerFailures: number;
  probeMs: number;
  maxPauseMs: number;
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

/**
 * The postponement of a job while `target`'s breaker is open: to the probe time plus a random part of the probe
 * period (at most MAX_WAKE_SPREAD_MS), so that the jobs postponed together do not all wake together, one to probe
 * and every other to be postponed again.
 */
function paused(target: Target, failures: number, probeAt: number): PostponeError {
  const spread = Math.floor(Math.random() * Math.min(target.probeMs, MAX_WAKE_SPREAD_MS));
  return new PostponeError(
    `destination ${target.name} paused: circuit breaker open after ${failures} consecutive failures, ` +
      `next probe in ${Math.max(Math.ceil((probeAt - Date.now()) / 1000), 0)} s (no request sent)`,
    probeAt + spread,
    target.maxPauseMs,
  );
}

/** A postponement of a job for one destination: its message is the failed reason once the job may wait no longer. */
function stillFailing(name: string, err: PostponeError): PostponeError {
  return new PostponeError(`destination still failing: ${name} (${err.message})`, err.at, err.maxPauseMs);
}

export function createFanOut(opts: FanOutOptions): FanOut {
  const targets: Target[] = opts.destinations.map((d) => ({
    name: d.name,
    events: d.events,
    send: createForwardSender({ url: d.url, secret: d.secrets, timeoutMs: d.timeoutMs }),
    pace: d.maxPerSecond === null ? null : new Pace(d.maxPerSecond),
    breakerFailures: d.breakerFailures,
    probeMs: d.breakerProbeSeconds * 1000,
    maxPauseMs: d.breakerMaxPauseSeconds * 1000,
  }));
  const breaker = opts.breaker ?? null;
  // Chosen by the ledger, not by the number of destinations: a reload down to one destination keeps the retry jobs
  // pending and the order they keep.
  const single = opts.ledger === null || opts.retries === null;
  if (single && targets.length > 1) {
    throw new Error('forward: several destinations need a ledger and retry jobs');
  }
  const observer = opts.observer;

  /** One request to one destination, timed, logged with its name; rejects as `forward` does. */
  async function sendTo(
    target: Target,
    decision: BreakerDecision,
    /** `forwardBodyOf` the event: made once for all the destinations of a job. */
    body: string,
    context: HandlerContext,
  ): Promise<void> {
    if (decision.state === 'open') throw paused(target, decision.failures, Date.now() + decision.probeInMs);
    const log = context.log.child({ destination: target.name });
    const ctx: HandlerContext = { ...context, log };
    await target.pace?.wait(context.signal);
    const started = performance.now();
    try {
      await target.send(body, ctx);
    } catch (err) {
      const seconds = (performance.now() - started) / 1000;
      observer?.failed(target.name, seconds);
      // `destination` comes from the child logger's bindings.
      log.warn({ attempt: context.attempt, err: (err as Error).message }, 'destination failed');
      // A refusal is an answer from a working destination; a shutdown says nothing of it.
      if (breaker && !(err instanceof PermanentError) && !context.signal.aborted) {
        const open = await breaker.failure(target.name, target.breakerFailures, target.probeMs).catch(() => null);
        if (open !== null) noteBreaker(target.name, open);
        if (open && decision.state === 'closed') {
          log.warn({ failures: target.breakerFailures }, 'circuit breaker open: requests paused, probing');
        }
      }
      throw err;
    }
    observer?.sent(target.name, (performance.now() - started) / 1000);
    if (breaker && (decision.state !== 'closed' || decision.dirty)) {
      const wasOpen = await breaker.success(target.name).catch(() => null);
      if (wasOpen !== null) noteBreaker(target.name, false);
      if (wasOpen) log.info('circuit breaker closed: the destination answered');
    }
  }

  /** The breakers of these destinations, read in one script call; unreadable: send, as without a breaker. */
  async function decideAll(list: readonly Target[], log: HandlerContext['log']): Promise<BreakerDecision[]> {
    const closed = list.map((): BreakerDecision => ({ state: 'closed', dirty: false }));
    if (!breaker || list.length === 0) return closed;
    let decisions: BreakerDecision[];
    try {
      decisions = await breaker.beforeAll(list.map((t) => ({ name: t.name, probeMs: t.probeMs })));
    } catch (err) {
      // The job needs Redis anyway: a breaker that cannot be read does not stop the request.
      log.warn({ err: (err as Error).message }, 'circuit breaker unreadable: sending');
      return closed;
    }
    list.forEach((t, i) => {
      noteBreaker(t.name, decisions[i]?.state !== 'closed');
    });
    return decisions;
  }

  /**
   * A job for one destination: a retry job of the fan-out, or a catch-up job of `replay --destination`. Its success
   * is recorded so that no later run (a replay of the dead letter) sends it there again; its failed reason names
   * the destination, as the dead letters of the fan-out did.
   */
  async function sendOnly(name: string, event: Parameters<Handler>[0], context: HandlerContext): Promise<void> {
    const target = targets.find((t) => t.name === name);
    if (target === undefined) {
      throw new PermanentError(`destination ${JSON.stringify(name)} is not configured in this worker`);
    }
    if (single) {
      const [decision] = await decideAll([target], context.log);
      await sendTo(target, decision as BreakerDecision, forwardBodyOf(event, context), context);
      return;
    }
    const ledger = opts.ledger as DestinationLedger;
    // RECORD_ORDER=latest: the newest event was picked by `prepare`, before `sellsy-fetch` fetched its object.
    const ctx = context;
    if (context.data.destinationRetry) {
      const entry = (await ledger.read(ctx.deliveryId)).get(name);
      if (entry === 'sent') return;
      if (entry?.startsWith('refused: ')) {
        // A replay of this dead letter asks the destination again.
        await ledger.record(ctx.deliveryId, new Map([[name, 'retrying']]));
        throw new PermanentError(`destination refused the event: ${name} (${entry.slice('refused: '.length)})`);
      }
    }
    try {
      const [decision] = await decideAll([target], ctx.log);
      await sendTo(target, decision as BreakerDecision, forwardBodyOf(ctx.data.event, ctx), ctx);
    } catch (err) {
      if (err instanceof RetryLaterError) throw err;
      const message = (err as Error)?.message ?? String(err);
      if (err instanceof PostponeError) throw stillFailing(name, err);
      if (err instanceof PermanentError) {
        throw new PermanentError(`destination refused the event: ${name} (${message})`, { cause: err });
      }
      throw new Error(`destination still failing: ${name} (${message})`, { cause: err });
    }
    await ledger
      .record(ctx.deliveryId, new Map([[name, 'sent']]))
      .catch((err: Error) => ctx.log.warn({ err: err.message }, 'destinations: could not record the send'));
  }

  /**
   * The breakers this process last saw open. `prepare` reads a breaker only for these: one it last saw closed costs
   * no Redis read before each job (`forward` reads it anyway); opened meanwhile by another worker, it costs at most
   * one job's `sellsy-fetch` before `forward` sees it open and `prepare` reads it from then on.
   */
  const seenOpen = new Set<string>();
  function noteBreaker(name: string, open: boolean): void {
    if (open) seenOpen.add(name);
    else seenOpen.delete(name);
    observer?.breaker?.(name, open);
  }

  async function prepare(
    name: string,
    data: WebhookJobData,
    log: HandlerContext['log'],
  ): Promise<{ name: string; data: WebhookJobData }> {
    const only = data.onlyDestination;
    const target =
      only !== undefined
        ? targets.find((t) => t.name === only)
        : single
          ? targets.find((t) => takesEvent(t, name))
          : undefined;
    // Not configured here: `forward` refuses it. An event's job with a ledger: the breaker hands it to a retry job.
    if (target === undefined) return { name, data };
    let out = { name, data };
    if (only !== undefined && data.destinationRetry && opts.retries !== null) {
      // RECORD_ORDER=latest: the newest event of the record handed to this destination since the job was made.
      const newest = await opts.retries.latest(data, only);
      if (newest !== null && newest.data.deliveryId !== data.deliveryId) {
        out = { name: newest.name, data: { ...newest.data, onlyDestination: only, destinationRetry: true } };
        log.info({ destination: only, latest: newest.data.deliveryId }, 'destination retry: sending a later event');
      }
    }
    if (!breaker || !seenOpen.has(target.name)) return out;
    const state = await breaker
      .states([target.name])
      .then((m) => m.get(target.name))
      .catch(() => undefined); // unreadable: `forward` sends, as without a breaker
    if (state !== undefined && !state.open) seenOpen.delete(target.name);
    if (state?.open && state.probeAt !== null && Date.now() < state.probeAt) {
      noteBreaker(target.name, true);
      const err = paused(target, state.failures, state.probeAt);
      throw only !== undefined ? stillFailing(only, err) : err;
    }
    return out;
  }

  const handler: Handler = async (event, context) => {
    const only = context.data.onlyDestination;
    if (only !== undefined) {
      await sendOnly(only, event, context);
      return;
    }
    const matching = targets.filter((t) => takesEvent(t, context.name));
    if (matching.length === 0) return;
    if (single) {
      const target = matching[0] as Target;
      const [decision] = await decideAll([target], context.log);
      await sendTo(target, decision as BreakerDecision, forwardBodyOf(event, context), context);
      return;
    }
    const ledger = opts.ledger as DestinationLedger;
    const retries = opts.retries as DestinationRetries;
    // What an earlier run of this job recorded: taken, or handed to a retry job (made again below if it is missing).
    const known = await ledger.read(context.deliveryId);
    const fresh = matching.filter((t) => !known.has(t.name));
    // RECORD_ORDER=latest: a destination with a retry job of this record pending gets this event through it, in order.
    const queued =
      fresh.length > 0
        ? await retries.pending(
            context.data,
            fresh.map((t) => t.name),
          )
        : new Set();
    const direct = fresh.filter((t) => !queued.has(t.name));
    const decisions = await decideAll(direct, context.log);
    // Each request in flight listens to the job's signal: many destinations at once are not a listener leak.
    const listeners = direct.length + 10;
    if (listeners > getMaxListeners(context.signal)) setMaxListeners(listeners, context.signal);
    const body = forwardBodyOf(event, context);
    const results = await Promise.allSettled(
      direct.map((t, i) => sendTo(t, decisions[i] as BreakerDecision, body, context)),
    );

    const entries = new Map<string, LedgerEntry>();
    if (context.signal.aborted) {
      // Shutting down: the job is handed back and runs again; only what was taken is kept.
      results.forEach((r, i) => {
        if (r.status === 'fulfilled') entries.set((direct[i] as Target).name, 'sent');
      });
      if (entries.size > 0) await ledger.record(context.deliveryId, entries);
      throw new Error('forward: aborted, the worker is shutting down');
    }
    /** Destination → when its retry job starts (ms from now; null: after the first backoff). */
    const handOff = new Map<string, number | null>();
    for (const t of matching) {
      if (queued.has(t.name)) {
        entries.set(t.name, 'retrying');
        handOff.set(t.name, 0);
      } else if (known.has(t.name) && known.get(t.name) !== 'sent') {
        handOff.set(t.name, 0);
      }
    }
    results.forEach((result, i) => {
      const { name } = direct[i] as Target;
      if (result.status === 'fulfilled') {
        entries.set(name, 'sent');
      } else if (result.reason instanceof PermanentError) {
        entries.set(name, `refused: ${(result.reason as Error).message}`);
        handOff.set(name, 0);
      } else {
        entries.set(name, 'retrying');
        handOff.set(name, result.reason instanceof PostponeError ? Math.max(result.reason.at - Date.now(), 0) : null);
      }
    });
    if (handOff.size === 0) {
      if (known.size > 0) await ledger.forget(context.deliveryId);
      return;
    }
    // Recorded before the retry jobs exist, and both before the job completes: a crash in between sends nothing twice.
    if (entries.size > 0) await ledger.record(context.deliveryId, entries);
    await Promise.all([...handOff].map(([name, delayMs]) => retries.add(context.name, context.data, name, delayMs)));
    context.log.info({ destinations: [...handOff.keys()] }, 'destinations handed to retry jobs of their own');
  };
  return { handler, prepare };
}
