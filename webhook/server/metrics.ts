import type { FastifyInstance } from 'fastify';
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { ReviewOutcome } from '../injection/outcome.js';

/**
 * The webhook's Prometheus metrics, in a registry of its own (never prom-client's global one, so
 * that two apps in one process — tests, benchmarks — do not share counters). Names follow Istio's
 * injector (`sidecar_injection_*`, reference §1.12) under the `apisix_mesh_webhook_` prefix.
 */
export interface WebhookMetrics {
  registry: Registry;
  /** Every `/inject` call, by HTTP status code. */
  requests: Counter<'code'>;
  /** Pods injected, by mode. */
  injections: Counter<'mode'>;
  /** Requests allowed unchanged, by reason. */
  skips: Counter<'reason'>;
  /** Pods refused because of what they carry (bad annotation values). */
  rejections: Counter;
  /** Requests that could not be reviewed: wrong content type, bad body, not an AdmissionReview, internal failure. */
  errors: Counter<'reason'>;
  /** Time from request received to response sent, for `/inject`. */
  duration: Histogram;
}

export type ErrorReason = 'unsupported-media-type' | 'bad-body' | 'undecodable-review' | 'internal';

const PREFIX = 'apisix_mesh_webhook_';

export function createWebhookMetrics(opts: { processMetrics?: boolean } = {}): WebhookMetrics {
  const registry = new Registry();
  if (opts.processMetrics ?? true) collectDefaultMetrics({ register: registry, prefix: PREFIX });
  const registers = [registry];
  return {
    registry,
    requests: new Counter({ name: `${PREFIX}requests_total`, help: 'Admission requests to /inject, by HTTP status code.', labelNames: ['code'], registers }),
    injections: new Counter({ name: `${PREFIX}injections_total`, help: 'Pods injected, by mode.', labelNames: ['mode'], registers }),
    skips: new Counter({ name: `${PREFIX}skips_total`, help: 'Admission requests allowed without a change, by reason.', labelNames: ['reason'], registers }),
    rejections: new Counter({ name: `${PREFIX}rejections_total`, help: 'Pods refused because of invalid annotations.', registers }),
    errors: new Counter({ name: `${PREFIX}errors_total`, help: 'Admission requests that could not be reviewed, by reason.', labelNames: ['reason'], registers }),
    duration: new Histogram({
      name: `${PREFIX}request_duration_seconds`,
      help: 'Time to answer an admission request to /inject.',
      // Reviews take well under a millisecond; the API server gives up after timeoutSeconds (≤ 30).
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 10, 30],
      registers,
    }),
  };
}

export function countOutcome(metrics: WebhookMetrics, outcome: ReviewOutcome): void {
  switch (outcome.kind) {
    case 'injected':
      metrics.injections.inc({ mode: outcome.mode });
      break;
    case 'skipped':
      metrics.skips.inc({ reason: outcome.reason });
      break;
    case 'rejected':
      metrics.rejections.inc();
      break;
  }
}

/** `GET /metrics` in Prometheus' text format. */
export async function metricsPlugin(app: FastifyInstance, opts: { metrics: WebhookMetrics }): Promise<void> {
  app.get('/metrics', async (_request, reply) => {
    reply.type(opts.metrics.registry.contentType);
    return opts.metrics.registry.metrics();
  });
}
