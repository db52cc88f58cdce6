import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { AgentMetrics } from './metrics.js';
import { DEFAULT_MERGE_LIMITS, MERGED_CONTENT_TYPE, mergedMetrics, scrapeTimeoutMs, type MergeLimits, type MetricsSource } from './telemetry/merged-metrics.js';
import type { AppProbeService } from './app-probes/app-probe-service.js';

/** probes and scrapes every few seconds: their request logs would drown the agent's own */
const QUIET = { logLevel: 'warn' as const };

export interface StatusSource {
  ready(): boolean;
  /** the first complete configuration is in the store (ready() may still wait for the certificate) */
  configured?(): boolean;
  /** what the agent still waits for (the 503's body) */
  notReadyReason?(): string;
  debugConfig(): unknown;
  /** the xDS versions accepted and those the served configuration was translated from */
  debugXds?(): unknown;
}

/** What `/stats/prometheus` merges besides the agent's own metrics (telemetry/merged-metrics.ts). */
export interface MetricsMerge {
  /** APISIX's export, then the app's */
  sources: readonly MetricsSource[];
  /** comment lines served with every answer (e.g. why the app's metrics cannot be merged) */
  notes?: readonly string[];
  limits?: MergeLimits;
}

/**
 * The agent's status port: `/healthz/ready` (200 once the first complete snapshot is in the store
 * and, with a CA, the first workload certificate has arrived; 503 before), `/healthz/configured`
 * (200 once that snapshot is in the store, whatever the certificate: what APISIX's start waits
 * for), `/stats/prometheus` (the pod's one merged Prometheus endpoint, as pilot-agent's, see
 * `MetricsMerge`), `/metrics` (the
 * agent's own metrics only), `/debug/config` (the current APISIX objects and what was skipped;
 * answered only to loopback clients since it exposes the mesh's configuration), `/debug/xds` (the
 * xDS versions accepted and applied: which push is served, without the whole configuration), and
 * `/app-health/<container>/livez|readyz|startupz` for the app probes the injection rewrote
 * (`appProbes`; any other such path is 404).
 */
export function buildStatusServer(
  source: StatusSource,
  metrics: AgentMetrics,
  logger: FastifyBaseLogger | { level: string },
  appProbes?: AppProbeService,
  merge: MetricsMerge = { sources: [] },
): FastifyInstance {
  // Fastify's pino logger is the agent's logger too (one JSON log stream)
  const app = 'info' in logger && typeof logger.info === 'function'
    ? Fastify({ loggerInstance: logger as FastifyBaseLogger })
    : Fastify({ logger: logger as { level: string } });
  app.get('/healthz/ready', QUIET, async (_req, reply) => {
    if (source.ready()) return reply.code(200).type('text/plain').send('ready\n');
    return reply.code(503).type('text/plain').send(`${source.notReadyReason?.() ?? 'waiting for the first complete configuration from istiod'}\n`);
  });
  // what APISIX's start waits for (agent/wait-command.ts): the configuration, not the certificate,
  // which only mTLS needs and which APISIX reads when it comes
  app.get('/healthz/configured', QUIET, async (_req, reply) => {
    if (source.configured?.() ?? source.ready()) return reply.code(200).type('text/plain').send('configured\n');
    return reply.code(503).type('text/plain').send('waiting for the first complete configuration from istiod\n');
  });
  const limits = merge.limits ?? DEFAULT_MERGE_LIMITS;
  // Scrapes that arrive while one is under way share its answer: the status port is open to the
  // cluster, and each merge may hold a few MiB per source; this way at most one is in memory.
  let inFlight: Promise<Buffer> | undefined;
  const merged = async (req: FastifyRequest, reply: FastifyReply) => {
    inFlight ??= mergeOnce(req).finally(() => {
      inFlight = undefined;
    });
    return reply.type(MERGED_CONTENT_TYPE).send(await inFlight);
  };
  const mergeOnce = (req: FastifyRequest): Promise<Buffer> =>
    mergedMetrics({
      sources: merge.sources,
      own: () => metrics.registry.metrics(),
      onFailure: (s, reason) => {
        metrics.scrapeFailures.inc({ source: s.name });
        req.log.warn(`merged metrics: ${s.name} metrics (${s.url.href}) left out: ${reason}`);
      },
      notes: merge.notes ?? [],
      timeoutMs: scrapeTimeoutMs(headerOf(req, 'x-prometheus-scrape-timeout-seconds'), limits),
      maxBytesPerSource: limits.maxBytesPerSource,
      userAgent: headerOf(req, 'user-agent'),
    });
  app.get('/stats/prometheus', QUIET, merged);
  // pilot-agent merges on /metrics too; here it stays the agent's own, cheap to poll (the pod
  // harness polls it every 50 ms; a merge there would scrape APISIX's export as often)
  app.get('/metrics', QUIET, async (_req, reply) => {
    reply.type(metrics.registry.contentType);
    return metrics.registry.metrics();
  });
  const loopbackOnly = (req: FastifyRequest, reply: FastifyReply, answer: () => unknown) => {
    const remote = req.socket.remoteAddress ?? '';
    if (!(remote === '127.0.0.1' || remote === '::1' || remote === '::ffff:127.0.0.1')) {
      return reply.code(403).send({ error: `${req.url.split('?', 1)[0]} is served to loopback clients only` });
    }
    return answer();
  };
  app.get('/debug/config', QUIET, async (req, reply) => loopbackOnly(req, reply, () => source.debugConfig()));
  app.get('/debug/xds', QUIET, async (req, reply) => loopbackOnly(req, reply, () => source.debugXds?.() ?? {}));
  app.get('/app-health/*', QUIET, async (req, reply) => {
    const path = req.url.split('?', 1)[0]!;
    const outcome = appProbes?.probe(path, req.headers);
    if (!outcome) return reply.code(404).type('text/plain').send('no app probe is declared at this path\n');
    const { status, detail } = await outcome;
    if (status >= 400) req.log.warn(`app probe ${path} failed: ${detail}`);
    return reply.code(status).type('text/plain').send(`${detail}\n`);
  });
  return app;
}

function headerOf(req: FastifyRequest, name: string): string | undefined {
  const value = req.headers[name];
  return typeof value === 'string' ? value : undefined;
}
