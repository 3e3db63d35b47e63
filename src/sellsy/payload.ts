/**
 * Turns the bytes of a Sellsy delivery into a typed event, without ever throwing.
 *
 * Inputs: the raw body and the request's `Content-Type`.
 * - `application/x-www-form-urlencoded`: the field `notif` holds the event as a JSON string (Sellsy's default);
 * - `application/json`: the event is the whole body (webhooks with `json_content_type`).
 * Output: `{ event, problem, notif }`. `event` is null and `problem` names the reason when the body is not a
 * Sellsy event (`unsupported_content_type`, `form_without_notif`, `ambiguous_notif`, `invalid_json`,
 * `not_an_object`); the caller still keeps the delivery (it becomes an `unknown` job). Sellsy's value sets are open: unknown event types and
 * extra keys are kept, never rejected.
 */

/** A Sellsy event. Ids and timestamp are strings on the wire; they are kept as sent. */
export interface SellsyEvent {
  /** Event family: `docslog`, `thirdlog`, `client`, `prospect`, `people`, `signature`, … (open set). */
  eventType: string | null;
  /** Verb: `created`, `updated`, `deleted`, `step`, `emailsent`, … (open set). */
  event: string | null;
  /** Object type: `invoice`, `estimate`, `third`, `people`, … (open set). */
  relatedType: string | null;
  relatedId: string | null;
  ownerType: string | null;
  ownerId: string | null;
  /** The Sellsy account id: object ids are unique per account only. */
  corpId: string | null;
  /** Unix seconds, as sent (a string in Sellsy's payloads). */
  timestamp: string | null;
  /** Full object snapshot, present when the webhook has `object_in_payload`. */
  relatedObject?: unknown;
  /** Every other key of the payload, untouched (`thirdtype`, `individual`, …). */
  extra: Record<string, unknown>;
}

export type ParseProblem =
  | 'unsupported_content_type'
  | 'form_without_notif'
  /** A form body with more than one `notif` field: form parsers disagree on which one counts (first or last). */
  | 'ambiguous_notif'
  | 'invalid_json'
  | 'not_an_object';

export type BodyFormat = 'form' | 'json' | 'other';

export interface ParsedDelivery {
  format: BodyFormat;
  event: SellsyEvent | null;
  problem: ParseProblem | null;
  /** The decoded `notif` value of a form body (what form-scope signatures cover), else null. */
  notif: string | null;
}

const KNOWN_KEYS: Record<string, keyof Omit<SellsyEvent, 'extra' | 'relatedObject'>> = {
  eventType: 'eventType',
  event: 'event',
  relatedtype: 'relatedType',
  relatedid: 'relatedId',
  ownertype: 'ownerType',
  ownerid: 'ownerId',
  corpid: 'corpId',
  timestamp: 'timestamp',
};

/** `application/json; charset=utf-8` → `application/json`. */
export function mediaType(contentType: string | undefined): string {
  if (!contentType) return '';
  const semi = contentType.indexOf(';');
  return (semi === -1 ? contentType : contentType.slice(0, semi)).trim().toLowerCase();
}

export function bodyFormat(contentType: string | undefined): BodyFormat {
  const type = mediaType(contentType);
  if (type === 'application/x-www-form-urlencoded') return 'form';
  if (type === 'application/json' || (type.startsWith('application/') && type.endsWith('+json'))) return 'json';
  return 'other';
}

export function parseDelivery(raw: Buffer, contentType: string | undefined): ParsedDelivery {
  const format = bodyFormat(contentType);
  if (format === 'other') return { format, event: null, problem: 'unsupported_content_type', notif: null };
  let json: string;
  let notif: string | null = null;
  if (format === 'form') {
    const values = new URLSearchParams(raw.toString('utf8')).getAll('notif');
    if (values.length === 0) return { format, event: null, problem: 'form_without_notif', notif: null };
    // Sellsy sends one. With two, this reader would take the first and a consumer's parser maybe the last: neither
    // is read, and no single notif is what the signature covers.
    if (values.length > 1) return { format, event: null, problem: 'ambiguous_notif', notif: null };
    json = notif = values[0] as string;
  } else {
    json = raw.toString('utf8');
  }
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch {
    return { format, event: null, problem: 'invalid_json', notif };
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    return { format, event: null, problem: 'not_an_object', notif };
  }
  return { format, event: toEvent(value as Record<string, unknown>), problem: null, notif };
}

function toEvent(payload: Record<string, unknown>): SellsyEvent {
  const event: SellsyEvent = {
    eventType: null,
    event: null,
    relatedType: null,
    relatedId: null,
    ownerType: null,
    ownerId: null,
    corpId: null,
    timestamp: null,
    extra: {},
  };
  for (const [key, value] of Object.entries(payload)) {
    const field = Object.hasOwn(KNOWN_KEYS, key) ? KNOWN_KEYS[key] : undefined;
    if (field !== undefined && (typeof value === 'string' || typeof value === 'number')) {
      event[field] = String(value);
    } else if (key === 'relatedobject') {
      event.relatedObject = value;
    } else {
      // defineProperty: a `__proto__` key is data here, not the object's prototype.
      Object.defineProperty(event.extra, key, { value, enumerable: true, writable: true, configurable: true });
    }
  }
  return event;
}

const NAME_PART = /^[A-Za-z0-9_-]{1,64}$/;
const DOTTED_NAME = /^[A-Za-z0-9_-]{1,64}\.[A-Za-z0-9_-]{1,64}$/;

/**
 * The job name of an event: `<relatedtype>.<event>` (`invoice.step`). A payload without `relatedtype` whose `event`
 * is already dotted (`{"event":"invoice.paid"}`) keeps that name. Anything else, or a value with characters outside
 * `[A-Za-z0-9_-]`, is `unknown`: names stay short and safe for metrics labels and handler patterns.
 */
export function jobNameOf(event: SellsyEvent | null): string {
  if (event === null) return 'unknown';
  const { relatedType, event: verb } = event;
  if (relatedType !== null && verb !== null) {
    return NAME_PART.test(relatedType) && NAME_PART.test(verb) ? `${relatedType}.${verb}` : 'unknown';
  }
  if (relatedType === null && verb !== null && DOTTED_NAME.test(verb)) return verb;
  return 'unknown';
}

/**
 * Job-name patterns (what handlers are registered under, what `replay --name` and `sellsy connect --events` take):
 * `invoice.step` exactly that name; `invoice.*` every verb of one related type; `*.deleted` one verb of every type;
 * `*` every parsed event; `unknown` the deliveries that are not Sellsy events, which no other pattern matches.
 */
const PATTERN = /^(\*|unknown|([^.*\s]+|\*)\.([^.*\s]+|\*))$/;

export function isPattern(pattern: string): boolean {
  return PATTERN.test(pattern);
}

/** Whether a pattern applies to a job name. */
export function matches(pattern: string, name: string): boolean {
  if (name === 'unknown' || pattern === 'unknown') return pattern === name;
  if (pattern === '*') return true;
  const dot = pattern.indexOf('.');
  const nameDot = name.indexOf('.');
  const [type, verb] = [pattern.slice(0, dot), pattern.slice(dot + 1)];
  const [nameType, nameVerb] = [name.slice(0, nameDot), name.slice(nameDot + 1)];
  return (type === '*' || type === nameType) && (verb === '*' || verb === nameVerb);
}
