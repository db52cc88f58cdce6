import { boundedGet as scrape, oneLine, type GetResult as ScrapeResult } from '../bounded-get.js';

/**
 * The pod's one Prometheus endpoint (the agent's status port, `/stats/prometheus`, as pilot-agent's
 * 15020): the agent's own metrics, then APISIX's Prometheus export, then the app's (from the
 * `prometheus.io/*` annotations the injection moved into `ISTIO_PROMETHEUS_ANNOTATIONS`), one after
 * the other as pilot-agent does. Bounded: each source gets a deadline and a byte limit, and a source
 * that fails (refused, timed out, not 200, too big) is left out with a comment line saying why —
 * the rest of the answer is still served, so an app that is down never hides the mesh's metrics.
 */

/** A source of the merge: a name for the comment lines and a loopback URL. */
export interface MetricsSource {
  name: string;
  url: URL;
}

export interface MergeLimits {
  /** deadline per scrape when Prometheus does not send its own (X-Prometheus-Scrape-Timeout-Seconds) */
  defaultTimeoutMs: number;
  /** bytes at most per source's answer */
  maxBytesPerSource: number;
}

export const DEFAULT_MERGE_LIMITS: Readonly<MergeLimits> = Object.freeze({ defaultTimeoutMs: 5000, maxBytesPerSource: 8 * 1024 * 1024 });

/**
 * What the merged answer is: the Prometheus text format (0.0.4), which every scraper reads. Sources
 * are asked for it too. pilot-agent instead passes Prometheus's Accept through and answers in the
 * app's format, mixing text and OpenMetrics in one answer; OpenMetrics also has no room for the
 * comment lines that name a skipped source.
 */
export const MERGED_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';
const ACCEPT_TEXT = 'text/plain;version=0.0.4;q=1,*/*;q=0.1';

/** Prometheus's own scrape deadline less a margin for the merge, within 100 ms .. 60 s. */
export function scrapeTimeoutMs(header: string | undefined, limits: MergeLimits): number {
  const seconds = header === undefined ? NaN : Number(header);
  if (!Number.isFinite(seconds) || seconds <= 0) return limits.defaultTimeoutMs;
  return Math.min(60_000, Math.max(100, Math.floor(seconds * 1000) - 250));
}

export interface MergeRequest {
  sources: readonly MetricsSource[];
  /** the agent's own exposition, rendered after the sources answered (so it counts their failures) */
  own: () => Promise<string>;
  /** told about each source that was left out */
  onFailure?: (source: MetricsSource, reason: string) => void;
  /** comment lines about sources that cannot be scraped at all (a bad app configuration) */
  notes?: readonly string[];
  timeoutMs: number;
  maxBytesPerSource: number;
  userAgent?: string;
}

export async function mergedMetrics(request: MergeRequest): Promise<Buffer> {
  const headers: Record<string, string> = { accept: ACCEPT_TEXT, 'x-prometheus-scrape-timeout-seconds': (request.timeoutMs / 1000).toFixed(3) };
  if (request.userAgent) headers['user-agent'] = oneLine(request.userAgent);
  const results = await Promise.all(
    request.sources.map((s) => scrape(s.url, { timeoutMs: request.timeoutMs, maxBytes: request.maxBytesPerSource, headers })),
  );
  const parts: Buffer[] = [];
  results.forEach((result, i) => {
    const source = request.sources[i]!;
    if (!result.ok) request.onFailure?.(source, result.reason);
    parts.push(...sourceParts(source, result));
  });
  const own = await request.own();
  const head = [withNewline(own), ...(request.notes ?? []).map((n) => `# apisix-mesh: ${oneLine(n)}\n`)].join('');
  return Buffer.concat([Buffer.from(head, 'utf8'), ...parts]);
}

const NEWLINE = Buffer.from('\n');

function sourceParts(source: MetricsSource, result: ScrapeResult): Buffer[] {
  if (!result.ok) return [Buffer.from(`# apisix-mesh: ${source.name} metrics (${source.url.href}) skipped: ${result.reason}\n`, 'utf8')];
  const body = withoutEof(result.body);
  return body.length === 0 || body[body.length - 1] === 0x0a ? [body] : [body, NEWLINE];
}

/**
 * OpenMetrics ends with `# EOF`; in the middle of a merged answer it would end it for some readers.
 * Only the last line is looked at (the bytes stay as they came).
 */
function withoutEof(body: Buffer): Buffer {
  const tail = body.subarray(Math.max(0, body.length - 32)).toString('latin1');
  const match = /(^|\n)# EOF[ \t]*\r?\n?$/.exec(tail);
  return match ? body.subarray(0, body.length - (tail.length - match.index - match[1]!.length)) : body;
}

function withNewline(text: string): string {
  return text === '' || text.endsWith('\n') ? text : `${text}\n`;
}
