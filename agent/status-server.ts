import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { AgentMetrics } from './metrics.js';
import type { AppProbeService } from './app-probes/app-probe-service.js';

/** probes and scrapes every few seconds: their request logs would drown the agent's own */
const QUIET = { logLevel: 'warn' as const };

export interface StatusSource {
  ready(): boolean;
  /** what the agent still waits for (the 503's body) */
  notReadyReason?(): string;
  debugConfig(): unknown;
}

/**
 * The agent's status port: `/healthz/ready` (200 once the first complete snapshot is in the store
 * and, with a CA, the first workload certificate has arrived; 503 before), `/metrics` (Prometheus), `/debug/config` (the current APISIX objects and what was
 * skipped; answered only to loopback clients since it exposes the mesh's configuration), and
 * `/app-health/<container>/livez|readyz|startupz` for the app probes the injection rewrote
 * (`appProbes`; any other such path is 404).
 */
export function buildStatusServer(
  source: StatusSource,
  metrics: AgentMetrics,
  logger: FastifyBaseLogger | { level: string },
  appProbes?: AppProbeService,
): FastifyInstance {
  // Fastify's pino logger is the agent's logger too (one JSON log stream)
  const app = 'info' in logger && typeof logger.info === 'function'
    ? Fastify({ loggerInstance: logger as FastifyBaseLogger })
    : Fastify({ logger: logger as { level: string } });
  app.get('/healthz/ready', QUIET, async (_req, reply) => {
    if (source.ready()) return reply.code(200).type('text/plain').send('ready\n');
    return reply.code(503).type('text/plain').send(`${source.notReadyReason?.() ?? 'waiting for the first complete configuration from istiod'}\n`);
  });
  app.get('/metrics', QUIET, async (_req, reply) => {
    reply.type(metrics.registry.contentType);
    return metrics.registry.metrics();
  });
  app.get('/debug/config', QUIET, async (req, reply) => {
    const remote = req.socket.remoteAddress ?? '';
    if (!(remote === '127.0.0.1' || remote === '::1' || remote === '::ffff:127.0.0.1')) {
      return reply.code(403).send({ error: '/debug/config is served to loopback clients only' });
    }
    return source.debugConfig();
  });
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
