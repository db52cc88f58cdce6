import type { FastifyInstance } from 'fastify';

/**
 * Liveness and readiness. `/healthz` answers as long as the process serves HTTP at all;
 * `/readyz` turns to 503 once shutdown begins, so that the Service stops sending new reviews while
 * the ones in flight drain.
 */
export interface Readiness {
  ready: boolean;
  /** Why not ready, reported in the body of `/readyz`. */
  reason?: string;
}

export async function healthPlugin(app: FastifyInstance, opts: { readiness: Readiness }): Promise<void> {
  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_request, reply) => {
    if (opts.readiness.ready) return { status: 'ready' };
    reply.code(503);
    return { status: 'not ready', reason: opts.readiness.reason ?? 'not ready' };
  });
}
