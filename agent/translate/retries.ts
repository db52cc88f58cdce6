import type { RetryPolicy } from '../xds/envoy-types.js';
import { durationSeconds, wrapped } from './values.js';
import type { AccessPhaseConf } from './access-phase.js';

type Note = (reason: string, detail: string, skipped?: boolean) => void;

/**
 * Envoy's retry policy in APISIX. nginx retries a request on the conditions of `proxy_next_upstream`
 * (connection errors, timeouts, some status codes), a directive that is fixed per location and
 * cannot differ per route; APISIX only sets how many tries (the upstream's `retries`) and for how
 * long (`retry_timeout`). So the sidecar's nginx has a few extra locations, one per set of
 * retriable status codes (RETRY_LOCATIONS, written into APISIX's config by
 * webhook/injection/retry-locations.ts), and a route with a retry policy hands its request to the
 * one that fits at the end of the access phase (the plugin of access-phase.ts), the way APISIX itself hands
 * gRPC requests to its `@grpc_pass` location. Those locations also retry on every connection error
 * and timeout, and POSTs too (`non_idempotent`, as Envoy retries any method); their balancer then
 * lets a retry happen only when the failed try failed in a way the route retries on:
 * - `connect`: no connection was made (refused, unreachable, connect timeout): Envoy's
 *   `connect-failure`, and `reset`, `5xx`, `gateway-error`, which include it;
 * - `reset`: connected, but no response header came (reset, closed, invalid answer): `reset`,
 *   `5xx`, `gateway-error`;
 * - `timeout`: connected, and the try's timeout passed: only with a `per_try_timeout`, under
 *   `reset`, `5xx` or `gateway-error` — Envoy never retries the route's own timeout.
 * A try that answered with a status is retried by the location only for the codes it lists, which
 * are the route's (or the largest listed set inside the route's; the rest is noted).
 */
export interface RetryLocation {
  /** the nginx named location, without its `@` */
  name: string;
  /** the statuses `proxy_next_upstream` retries there (nginx knows 500, 502, 503, 504, 403, 404, 429) */
  statuses: readonly number[];
}

export const RETRY_LOCATIONS: readonly RetryLocation[] = [
  { name: 'apisix_mesh_retry', statuses: [] },
  { name: 'apisix_mesh_retry_503', statuses: [503] }, // Istio's default policy (retriable-status-codes: 503)
  { name: 'apisix_mesh_retry_gateway', statuses: [502, 503, 504] }, // gateway-error
  { name: 'apisix_mesh_retry_5xx', statuses: [500, 502, 503, 504] }, // 5xx
];

/** Which failed tries without an answer the route retries (read by the retry locations' balancer). */
export interface RetryConditions {
  connect: boolean;
  reset: boolean;
  timeout: boolean;
}

export interface RetryTranslation {
  /** how many retries after the first try (the upstream's `retries`) */
  retries: number;
  /** the per-try timeout, seconds (nginx's read timeout of each try) */
  perTry?: number;
  /** where the request goes to be retried; undefined when it is never retried */
  location?: RetryLocation;
  conditions?: RetryConditions;
}

/** retry_on conditions that only exist for HTTP/2 or gRPC answers; APISIX speaks HTTP/1.1 upstream. */
const NOT_APPLICABLE = new Set(['refused-stream', 'cancelled', 'deadline-exceeded', 'internal', 'resource-exhausted', 'unavailable', 'http3-post-connect-failure']);
const KNOWN = new Set(['5xx', 'gateway-error', 'reset', 'reset-before-request', 'connect-failure', 'retriable-status-codes', 'retriable-4xx', 'retriable-headers', 'envoy-ratelimited', ...NOT_APPLICABLE]);

export function translateRetryPolicy(policy: RetryPolicy | null | undefined, note: Note): RetryTranslation {
  if (!policy) return { retries: 0 };
  const retries = wrapped(policy.num_retries) ?? 1; // Envoy's default
  const perTry = durationSeconds(policy.per_try_timeout);
  const on = new Set((policy.retry_on ?? '').split(',').map((s) => s.trim()).filter(Boolean));
  const unknown = [...on].filter((c) => !KNOWN.has(c));
  if (unknown.length) note('retry-condition', `retry_on ${unknown.join(', ').slice(0, 80)} is not known and not retried on`);
  const anyFailure = on.has('5xx') || on.has('gateway-error') || on.has('reset');
  const conditions: RetryConditions = {
    connect: anyFailure || on.has('connect-failure') || on.has('reset-before-request'),
    reset: anyFailure,
    timeout: anyFailure && perTry !== undefined && perTry > 0,
  };
  const wanted = new Set<number>();
  if (on.has('5xx')) for (let code = 500; code < 600; code++) wanted.add(code);
  if (on.has('gateway-error')) for (const code of [502, 503, 504]) wanted.add(code);
  if (on.has('retriable-status-codes')) for (const code of policy.retriable_status_codes ?? []) wanted.add(code);
  if (on.has('retriable-4xx')) wanted.add(409);
  const location = largestWithin(wanted);
  const left = [...wanted].filter((code) => !location.statuses.includes(code)).sort((a, b) => a - b);
  if (left.length) note('retry-status-codes', `answers ${codeRanges(left)} are not retried (nginx retries only on ${location.statuses.join(', ') || 'no status'} for this route)`);
  for (const [condition, what] of [['retriable-headers', 'response headers'], ['envoy-ratelimited', 'x-envoy-ratelimited']] as const) {
    if (on.has(condition)) note('retry-condition', `retries on ${what} (${condition}) are not translated`);
  }
  if (policy.retriable_request_headers?.length) note('retry-condition', 'retriable_request_headers is not translated: every request is retried');
  if (policy.retry_back_off || policy.rate_limited_retry_back_off) note('retry-back-off', 'retry back-off is not translated: nginx retries at once');
  if ((policy.retry_host_predicate ?? []).some((p) => p.name !== 'envoy.retry_host_predicates.previous_hosts') || policy.retry_priority) {
    note('retry-host-selection', 'retry host predicates other than previous_hosts and retry priorities are not translated');
  }
  if (policy.per_try_idle_timeout) note('retry-per-try-idle', 'per_try_idle_timeout is not translated');
  const out: RetryTranslation = { retries };
  if (perTry !== undefined && perTry > 0) out.perTry = perTry;
  if (retries > 0 && (conditions.connect || conditions.reset || location.statuses.length)) {
    out.location = location;
    out.conditions = conditions;
  } else out.retries = 0; // nothing APISIX could retry on
  return out;
}

/** The retry location with the most statuses that are all in `wanted`. */
function largestWithin(wanted: ReadonlySet<number>): RetryLocation {
  let best = RETRY_LOCATIONS[0]!;
  for (const location of RETRY_LOCATIONS) {
    if (location.statuses.every((s) => wanted.has(s)) && location.statuses.length > best.statuses.length) best = location;
  }
  return best;
}

/** 500, 501, 505, 506, …, 599 → "500-501, 505-599" */
function codeRanges(codes: number[]): string {
  const ranges: string[] = [];
  for (let i = 0; i < codes.length; ) {
    let j = i;
    while (j + 1 < codes.length && codes[j + 1] === codes[j]! + 1) j++;
    ranges.push(i === j ? String(codes[i]) : `${codes[i]}-${codes[j]}`);
    i = j + 1;
  }
  return ranges.join(', ');
}

/**
 * The route's hand-over, in the access-phase plugin (access-phase.ts): what the retry location's
 * balancer may retry, then APISIX's request context stashed and the request sent to the location,
 * where APISIX's own upstream handling goes on (webhook/injection/retry-locations.ts).
 */
export function retryHandOverConf(location: RetryLocation, conditions: RetryConditions): NonNullable<AccessPhaseConf['retry']> {
  return { location: location.name, connect: conditions.connect, reset: conditions.reset, timeout: conditions.timeout };
}
