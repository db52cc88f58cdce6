/**
 * What an httpGet probe does with a redirect, as the kubelet's prober and Istio's pilot-agent do
 * (both use Go's http.Client with the kubelet's redirect checker, pkg/probe/http):
 * - Go follows 301, 302, 303, 307 and 308 that carry a Location; any other 3xx is the answer;
 * - to the same host name (the port and the scheme may change) it is followed, with the probe's
 *   headers; a custom Host header only through a relative Location (Go keeps `req.Host` then);
 * - to another host it is not followed: the 3xx is the answer, which passes (the kubelet's
 *   "Warning", a success; pilot-agent answers 200);
 * - the 10th request may not redirect again ("stopped after 10 redirects": a failure), and a
 *   Location that does not parse fails the probe.
 */
export const MAX_PROBE_REQUESTS = 10;

const FOLLOWED = new Set([301, 302, 303, 307, 308]);

export type RedirectStep =
  /** not a redirect Go follows: `status` is the probe's answer */
  | { kind: 'answer' }
  /** the next request; `keepHost`: the probe's Host header goes with it */
  | { kind: 'follow'; url: URL; keepHost: boolean }
  /** a redirect to another host: not followed, the probe passes */
  | { kind: 'elsewhere'; host: string }
  | { kind: 'fail'; reason: string };

/**
 * The step after an answer `status` with `location` to the request for `current`, the probe's
 * first URL being `first`, after `requests` requests in all.
 */
export function redirectStep(first: URL, current: URL, status: number, location: string | undefined, requests: number): RedirectStep {
  if (!FOLLOWED.has(status) || location === undefined || location === '') return { kind: 'answer' };
  let next: URL;
  try {
    next = new URL(location, current);
  } catch {
    return { kind: 'fail', reason: `${status} with a Location that does not parse` };
  }
  if (next.hostname !== first.hostname) return { kind: 'elsewhere', host: next.hostname.slice(0, 64) };
  if (requests >= MAX_PROBE_REQUESTS) return { kind: 'fail', reason: `stopped after ${MAX_PROBE_REQUESTS} redirects` };
  if (next.protocol !== 'http:' && next.protocol !== 'https:') return { kind: 'fail', reason: `redirect to an unsupported scheme ${next.protocol.slice(0, 16)}` };
  // Go: a Location without a scheme is relative (`url.IsAbs`), and keeps the request's Host
  return { kind: 'follow', url: next, keepHost: !/^[a-zA-Z][a-zA-Z0-9+.-]*:/.test(location) };
}
