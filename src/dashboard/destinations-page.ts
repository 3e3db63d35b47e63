/**
 * The dashboard's destinations page: where each destination of `forward` stands, next to Bull Board's queues.
 *
 * - `GET /admin/destinations`: an HTML page, rendered here (no script, no frontend build), one row per destination:
 *   its name, where it sends (scheme, host and path: the query string, which may carry a token, is never shown), its
 *   event filter, its circuit breaker (closed, or open with its failures and the next probe), the dead letters it has
 *   still to take, and the `replay --destination` command that sends them.
 * - `GET /admin/api/destinations`: the same as JSON.
 *
 * The figures are src/queue/destination-status.ts's, the ones `stats` prints. The destinations are read from
 * `DESTINATIONS_FILE` at each request, so the page follows a `destinations reload` of the workers (the listener serving
 * the dashboard needs the same file and secret variables as the workers); a file the workers would refuse is shown as
 * such, with the list read at start. Why the file and not a worker's list: the dashboard is the listener's, which
 * runs without a worker as often as with one (`listen`), and the file is small. With `FORWARD_URL`, its one
 * destination. Registered inside the dashboard's plugin, so its login, failed-login limit and
 * anti-framing headers apply; Bull Board links here from its header menu (`uiConfig.miscLinks`).
 */
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { Config, Destination } from '../config/config.ts';
import { DEFAULT_EVENTS, loadDestinations } from '../config/destinations.ts';
import type { RedisClient } from '../queue/connection.ts';
import { type DestinationStatus, destinationStatus } from '../queue/destination-status.ts';
import { shownUrl } from '../redact.ts';

export const DESTINATIONS_PAGE = '/destinations';

export interface DestinationsPageDeps {
  config: Config;
  /** Where DESTINATIONS_FILE's secret variables are read. */
  env: NodeJS.ProcessEnv;
  /** The dashboard's own connection. */
  client: RedisClient;
  /** Waits briefly for that connection; false when Redis is not there. */
  redisReady: () => Promise<boolean>;
}

export interface DestinationView extends DestinationStatus {
  /** Scheme, host and path of the destination's URL; never its query string. */
  url: string;
  events: readonly string[];
  /** The command that sends this destination its dead letters. */
  replay: string;
}

export interface DestinationsReport {
  /** When the figures were read (ISO 8601). */
  at: string;
  /** Why DESTINATIONS_FILE could not be read now (the destinations shown are then those read at start); else null. */
  fileProblem: string | null;
  destinations: DestinationView[];
}

/** Registers both routes on the dashboard's (prefixed) plugin. */
export function destinationsPage(app: FastifyInstance, deps: DestinationsPageDeps): void {
  app.get(DESTINATIONS_PAGE, async (_request, reply) => {
    const report = await read(deps, reply);
    if (report === null) return reply;
    return reply.type('text/html; charset=utf-8').send(renderPage(report, Date.parse(report.at)));
  });
  // Under /api/: the dashboard's hook has already answered 503 when Redis is not ready.
  app.get(`/api${DESTINATIONS_PAGE}`, async (_request, reply) => {
    const report = await read(deps, reply);
    return report === null ? reply : report;
  });
}

/** The report, or null once a 503 is sent (Redis not ready, or a command failed or timed out). */
async function read(deps: DestinationsPageDeps, reply: FastifyReply): Promise<DestinationsReport | null> {
  const unavailable = () => {
    reply.code(503).send({ error: 'redis_unavailable', message: 'Redis does not answer; try again' });
    return null;
  };
  if (!(await deps.redisReady())) return unavailable();
  const at = new Date();
  const { destinations, fileProblem } = currentDestinations(deps);
  let statuses: DestinationStatus[];
  try {
    statuses = await destinationStatus({ ...deps.config, destinations }, deps.client);
  } catch {
    // The connection reports its errors once (the dashboard's listener on it); the page only says it failed.
    return unavailable();
  }
  const byName = new Map<string, Destination>(destinations.map((d) => [d.name, d]));
  return {
    at: at.toISOString(),
    fileProblem,
    destinations: statuses.map((status) => {
      const destination = byName.get(status.name) as Destination;
      return {
        ...status,
        url: shownUrl(destination.url),
        events: destination.events,
        replay: `sellsy-webhooks replay --destination ${status.name}`,
      };
    }),
  };
}

/** DESTINATIONS_FILE as it is now, checked as a reload checks it; the list read at start when it has a problem. */
function currentDestinations(deps: DestinationsPageDeps): {
  destinations: readonly Destination[];
  fileProblem: string | null;
} {
  const { config } = deps;
  if (config.destinationsFile === null) return { destinations: config.destinations, fileProblem: null };
  const problems: string[] = [];
  const destinations = loadDestinations(config.destinationsFile, deps.env, config.forwardTimeoutMs, problems);
  return problems.length > 0
    ? { destinations: config.destinations, fileProblem: problems.join('; ') }
    : { destinations, fileProblem: null };
}

/**
 * The five characters that matter in HTML text and quoted attributes. Hand-written: the page is a few strings, and
 * a template engine (or an escaping package) would be a dependency for these five replacements.
 */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function renderPage(report: DestinationsReport, now: number): string {
  const rows = report.destinations.map((d) => {
    const events =
      d.events.length === DEFAULT_EVENTS.length && DEFAULT_EVENTS.every((e) => d.events.includes(e))
        ? 'every event (<code>*</code>, <code>unknown</code>)'
        : d.events.map((e) => `<code>${escapeHtml(e)}</code>`).join(', ');
    let breaker: string;
    if (d.breaker === 'open') {
      const probeAt = d.nextProbeAt === null ? now : Date.parse(d.nextProbeAt);
      const probe =
        probeAt > now ? `next probe in ${Math.ceil((probeAt - now) / 1000)} s` : 'the next request is the probe';
      breaker = `<strong class="open">OPEN</strong> after ${d.failures} failures in a row; paused, ${probe}`;
    } else {
      breaker = `closed${d.failures > 0 ? `, ${d.failures} failures in a row` : ''}`;
    }
    const dead =
      d.deadLetters > 0
        ? `${d.deadLetters}${d.deadLettersCapped ? '+' : ''}`
        : `0${d.deadLettersCapped ? ' (of the most recent)' : ''}`;
    const replay = d.deadLetters > 0 ? `<code>${escapeHtml(d.replay)}</code>` : '';
    return (
      `<tr class="${d.breaker}"><th scope="row">${escapeHtml(d.name)}</th>` +
      `<td><code>${escapeHtml(d.url)}</code></td><td>${events}</td><td>${breaker}</td>` +
      `<td class="number">${dead}</td><td>${replay}</td></tr>`
    );
  });
  const body =
    rows.length === 0
      ? '<p>No destination is configured in this process (<code>DESTINATIONS_FILE</code> or <code>FORWARD_URL</code>): ' +
        'give the listener the same file as the workers to see them here.</p>'
      : '<table><thead><tr><th>destination</th><th>URL</th><th>events</th><th>circuit breaker</th>' +
        `<th>dead letters</th><th>to send them</th></tr></thead><tbody>${rows.join('')}</tbody></table>` +
        '<p class="note">Dead letters: failed jobs this destination has still to take, counted among the most recent ' +
        'dead letters of each queue. Run the command where the workers&#39; environment is.</p>';
  const problem =
    report.fileProblem === null
      ? ''
      : `<p class="problem"><strong>DESTINATIONS_FILE cannot be used as it is now</strong> (a reload would refuse it; ` +
        `the destinations below are those read at start): ${escapeHtml(report.fileProblem)}</p>\n`;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Destinations · Sellsy webhooks</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;margin:2rem;color:#1f2937}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.5rem .75rem;border-bottom:1px solid #e5e7eb;vertical-align:top}
thead th{font-size:.8rem;text-transform:uppercase;color:#6b7280}tr.open{background:#fef2f2}.open{color:#b91c1c}
.number{text-align:right}.problem{color:#b91c1c}.note{color:#6b7280;font-size:.9rem}code{font-size:.9em}
</style></head>
<body><p><a href="./">← queues</a> · <a href="api/destinations">JSON</a></p>
<h1>Destinations</h1><p>Read at ${escapeHtml(report.at)}.</p>
${problem}${body}
</body></html>
`;
}
