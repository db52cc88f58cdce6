import { shortQuote } from '../../cli/short-quote.js';
import type { MetricsSource } from './merged-metrics.js';

/** pilot-agent's variable: the app's `prometheus.io/*` annotations as `{"scrape","path","port"}`. */
export const PROMETHEUS_SCRAPE_ENV = 'ISTIO_PROMETHEUS_ANNOTATIONS';

/**
 * The app's metrics as a merge source, from `ISTIO_PROMETHEUS_ANNOTATIONS` (set by the injection),
 * with pilot-agent's defaults: path `/metrics`, port 80; `scrape: "false"` means none. Scraped on
 * 127.0.0.1 (the agent's traffic is never captured). A value that cannot be used gives no source and
 * a `problem`, served as a comment line in every merged answer and logged once; it never stops the
 * agent. Refused: not JSON of that shape, a port that is not 1-65535 or is the agent's own status
 * port (pilot-agent refuses it: the merge would call itself), a path that is not an absolute path.
 */
export function appMetricsSource(envValue: string | undefined, statusPort: number): { source?: MetricsSource; problem?: string } {
  if (envValue === undefined || envValue === '') return {};
  const problem = (why: string) => ({ problem: `${PROMETHEUS_SCRAPE_ENV} ${shortQuote(envValue)}: ${why}; the app's metrics are not merged` });
  if (envValue.length > 4096) return problem('longer than 4096 characters');
  let parsed: unknown;
  try {
    parsed = JSON.parse(envValue);
  } catch {
    return problem('not JSON');
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) return problem('not a JSON object');
  const fields = parsed as Record<string, unknown>;
  for (const key of ['scrape', 'path', 'port']) {
    if (fields[key] !== undefined && typeof fields[key] !== 'string') return problem(`"${key}" is not a string`);
  }
  const scrape = (fields.scrape as string | undefined) ?? '';
  if (scrape === 'false') return {};
  const path = (fields.path as string | undefined) || '/metrics';
  const portText = (fields.port as string | undefined) || '80';
  const port = /^\d{1,5}$/.test(portText) ? Number(portText) : NaN;
  if (!(port >= 1 && port <= 65535)) return problem('"port" is not a port number');
  if (port === statusPort) return problem('"port" is the agent\'s own status port');
  // no scheme, no authority, no spaces or control characters: only a path (and query) on 127.0.0.1
  if (!/^\/(?!\/)[\x21-\x7e]*$/.test(path) || path.length > 1024) return problem('"path" is not an absolute URL path');
  return { source: { name: 'app', url: new URL(`http://127.0.0.1:${port}${path}`) } };
}

/** APISIX's Prometheus export in the sidecar (webhook/injection/apisix-config.ts, APISIX's export_uri). */
export const DEFAULT_APISIX_METRICS_URL = 'http://127.0.0.1:15090/apisix/prometheus/metrics';

/**
 * `--apisix-metrics-url`: `none`, or an http:// URL on loopback (the merge fetches it for anyone who
 * can reach the status port, so it may not point elsewhere). Returns the source, or a reason.
 */
export function apisixMetricsSource(value: string): { source?: MetricsSource; problem?: string } {
  if (value === 'none') return {};
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return { problem: `${shortQuote(value)} is not a URL` };
  }
  if (url.protocol !== 'http:') return { problem: `${shortQuote(value)}: only http:// is scraped` };
  if (!['127.0.0.1', '[::1]', 'localhost'].includes(url.hostname)) return { problem: `${shortQuote(value)}: the host must be loopback (127.0.0.1, [::1], localhost)` };
  return { source: { name: 'apisix', url } };
}

/**
 * Istio's standard metrics (`istio_requests_total`, …), which the sidecar's Lua counts and serves
 * on APISIX's export server at `/stats/prometheus` (as Envoy's 15090 does;
 * agent/l4/lua/apisix_mesh/istio_metrics.lua): the same origin as APISIX's export, so none without it.
 */
export function istioMetricsSource(apisix: MetricsSource | undefined): MetricsSource | undefined {
  return apisix ? { name: 'istio', url: new URL('/stats/prometheus', apisix.url) } : undefined;
}
