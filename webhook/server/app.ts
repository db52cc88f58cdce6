import type { ServerOptions as HttpsServerOptions } from 'node:https';
import Fastify, { LogController, type FastifyError, type FastifyInstance } from 'fastify';
import { defaultInjectionConfig, type InjectionConfig } from '../config/index.js';
import { reviewAdmission } from '../injection/review.js';
import { admissionRoutePlugin, type Reviewer } from './admission-route.js';
import { healthPlugin, type Readiness } from './health.js';
import { createWebhookMetrics, metricsPlugin, type WebhookMetrics } from './metrics.js';

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

export interface WebhookAppOptions {
  /** The injection configuration; defaults to `defaultInjectionConfig`. */
  config?: InjectionConfig;
  /** Replaces the injection's review (defaults to `reviewAdmission` with `config`). */
  review?: Reviewer;
  /** Bodies larger than this get 400. Defaults to 6 MiB, Istio's limit. */
  maxBodyBytes?: number;
  /** Structured JSON logs at this level; `silent` for none. Defaults to `info`. */
  logLevel?: LogLevel;
  /** Where the JSON log lines go; defaults to stdout. */
  logStream?: { write(line: string): void };
  /** TLS settings; without them the app speaks plain HTTP (used by `app.inject` tests only). */
  https?: HttpsServerOptions;
  readiness?: Readiness;
  metrics?: WebhookMetrics;
  /** A request not fully received by then is answered 408 and its connection closed. Defaults to 30 s. */
  requestTimeoutMs?: number;
}

export const DEFAULT_MAX_BODY_BYTES = 6 * 1024 * 1024;
/** The API server waits at most 30 s for a webhook; a request still unfinished by then is abandoned. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;
/**
 * A connection that has not finished its TLS handshake by then is closed (Node's default holds it
 * 120 s, so idle sockets that never speak could pile up). The API server's handshake takes
 * milliseconds, and its whole call to the webhook times out after `timeoutSeconds` (5 s here).
 */
export const TLS_HANDSHAKE_TIMEOUT_MS = 5_000;
/**
 * A connection silent this long is closed: one that finished its handshake but never sends a
 * request is not covered by the request timeouts (they start with the first byte of a request).
 * Between requests, Node applies the keep-alive timeout instead, so the API server's reused
 * connections are not affected.
 */
export const IDLE_CONNECTION_TIMEOUT_MS = 5_000;

/**
 * The webhook as a Fastify app: one plugin per concern (admission route, health, metrics). Nothing
 * here listens; `startWebhookServer` does that, tests use `app.inject`.
 */
export function buildWebhookApp(opts: WebhookAppOptions = {}): FastifyInstance {
  const config = opts.config ?? defaultInjectionConfig;
  // Built once: the injection caches its sidecar parts per configuration object.
  const sidecarNamespaceConfig: InjectionConfig = { ...config, defaultMode: 'sidecar' };
  const review: Reviewer =
    opts.review ?? ((request, namespaceMode) => reviewAdmission(request, namespaceMode === 'sidecar' ? sidecarNamespaceConfig : config));
  const metrics = opts.metrics ?? createWebhookMetrics();
  const readiness = opts.readiness ?? { ready: true };
  const maxBodyBytes = opts.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;

  const app = Fastify({
    logger: {
      level: opts.logLevel ?? 'info',
      ...(opts.logStream ? { stream: opts.logStream } : {}),
      // startWebhookServer logs one "webhook listening" line with the port, URL and certificate;
      // Fastify's own "Server listening at …" (one per interface address) would say it again
      hooks: {
        logMethod(args: unknown[], method: (...a: unknown[]) => void) {
          if (typeof args[0] === 'string' && args[0].startsWith('Server listening at ')) return;
          method.apply(this, args);
        },
      },
    },
    // Node checks request timeouts on this interval (30 s by default, which would double the wait).
    ...(opts.https
      ? {
          https: {
            ...opts.https,
            connectionsCheckingInterval: Math.min(5000, opts.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS),
            handshakeTimeout: TLS_HANDSHAKE_TIMEOUT_MS,
          },
        }
      : {}),
    // One line per review is logged by the route, without pod contents; Fastify's own request
    // lines would double the log volume.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: maxBodyBytes,
    connectionTimeout: IDLE_CONNECTION_TIMEOUT_MS,
    requestTimeout: opts.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS,
    // While draining, requests that still arrive on open keep-alive connections are answered,
    // not refused with 503: the API server may already have sent them.
    return503OnClosing: false,
  }) as unknown as FastifyInstance;

  // Node's timeout check only works with headersTimeout ≤ requestTimeout, which Fastify leaves at 60 s.
  app.server.headersTimeout = Math.min(app.server.headersTimeout, app.server.requestTimeout);

  // Routes outside /inject (health, metrics, 404s) never answer 5xx for a client's mistake either.
  app.setErrorHandler((error: FastifyError, request, reply) => {
    const status = error.statusCode && error.statusCode >= 400 && error.statusCode < 500 ? error.statusCode : 400;
    if (!error.statusCode || error.statusCode >= 500) request.log.error({ err: error }, 'request failed');
    return reply.code(status).send({ statusCode: status, error: 'Bad Request', message: error.message });
  });

  app.register(admissionRoutePlugin, { review, metrics, maxBodyBytes });
  app.register(healthPlugin, { readiness });
  app.register(metricsPlugin, { metrics });
  return app;
}
