import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { AdmissionRequest } from '../injection/admission-types.js';
import type { ReviewOutcome } from '../injection/outcome.js';
import {
  FALLBACK_API_VERSION,
  decodeAdmissionReview,
  failedResponse,
  reviewResponse,
  serializeReview,
  undecodableResponse,
} from './admission-codec.js';
import { countOutcome, type ErrorReason, type WebhookMetrics } from './metrics.js';

/**
 * The mode a webhook entry's path names for the pods it sends (`/inject/sidecar`): the entries of
 * the MutatingWebhookConfiguration select namespaces by label (the AdmissionReview carries no
 * namespace labels), so a namespace labelled `apisix-mesh.io/mode=sidecar` reaches the webhook on
 * its own path, where pods that name no mode of their own default to sidecar.
 */
export const NAMESPACE_MODES = ['sidecar'] as const;
export type NamespaceMode = (typeof NAMESPACE_MODES)[number];

/** Decides one admission request; the injection's `reviewAdmission` bound to its configuration. */
export type Reviewer = (request: AdmissionRequest, namespaceMode?: NamespaceMode) => ReviewOutcome;

export interface AdmissionRouteOptions {
  review: Reviewer;
  metrics: WebhookMetrics;
  /** Larger bodies get 400. */
  maxBodyBytes: number;
}

/**
 * `POST /inject`. Every answer is JSON and none is a 5xx: transport problems (content type, empty
 * or oversized body) are 4xx as in Istio's injector; anything about the review itself — not JSON,
 * not an AdmissionReview, a refused pod, even a failure inside the webhook — is a 200
 * AdmissionReview with `allowed: false` and the reason, so the API server shows it to the user.
 */
export async function admissionRoutePlugin(app: FastifyInstance, opts: AdmissionRouteOptions): Promise<void> {
  const { metrics } = opts;

  // Only `application/json` (parameters such as charset allowed); every other type is a 415.
  // The body is kept as text and decoded by the route, so that bad JSON becomes an in-band refusal.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/json', { parseAs: 'string', bodyLimit: opts.maxBodyBytes }, (_req, body, done) => {
    done(null, body);
  });

  // Callback style: no promise per request on the hot path.
  app.addHook('onResponse', (_request, reply, done) => {
    metrics.requests.inc({ code: String(reply.statusCode) });
    metrics.duration.observe(reply.elapsedTime / 1000);
    done();
  });

  app.setErrorHandler((error: FastifyError, request, reply) => {
    const status = error.statusCode ?? 500;
    if (error.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE' || status === 415) {
      return clientError(reply, metrics, 415, 'unsupported-media-type', `invalid Content-Type ${JSON.stringify(request.headers['content-type'] ?? '')}, want application/json`);
    }
    if (error.code === 'FST_ERR_CTP_BODY_TOO_LARGE' || status === 413) {
      return clientError(reply, metrics, 400, 'bad-body', `request body larger than ${opts.maxBodyBytes} bytes`);
    }
    if (status >= 400 && status < 500) {
      return clientError(reply, metrics, 400, 'bad-body', `bad request body: ${error.message}`);
    }
    // Not expected to happen (the route catches its own failures); still an answer, not a 500.
    request.log.error({ err: error }, 'admission request failed');
    metrics.errors.inc({ reason: 'internal' });
    return reply.code(200).send(failedResponse(FALLBACK_API_VERSION, '', `webhook failure: ${error.message}`));
  });

  app.post('/inject', async (request, reply) => handle(request, reply, undefined));
  app.post<{ Params: { mode: string } }>('/inject/:mode', async (request, reply) => {
    const mode = request.params.mode;
    if (!(NAMESPACE_MODES as readonly string[]).includes(mode)) {
      // A webhook entry with a wrong path: never inject with a guessed mode. A 400, so the API
      // server applies the entry's failurePolicy (Fail once ready: the pod is refused).
      return clientError(reply, metrics, 400, 'bad-body', `unknown path /inject/${mode.slice(0, 40)} (known: ${NAMESPACE_MODES.map((m) => `/inject/${m}`).join(', ')})`);
    }
    return handle(request, reply, mode as NamespaceMode);
  });

  async function handle(request: FastifyRequest, reply: FastifyReply, namespaceMode: NamespaceMode | undefined) {
    const body = request.body;
    if (typeof body !== 'string' || body.length === 0) {
      return clientError(reply, metrics, 400, 'bad-body', 'no body found');
    }
    const decoded = decodeAdmissionReview(body);
    if (!decoded.ok) {
      metrics.errors.inc({ reason: 'undecodable-review' });
      request.log.info({ uid: decoded.uid, reason: decoded.message }, 'refused a body that is not an AdmissionReview');
      return undecodableResponse(decoded);
    }
    const { apiVersion, request: admission } = decoded;
    let reviewed: ReviewOutcome;
    try {
      reviewed = opts.review(admission, namespaceMode);
    } catch (err) {
      // The review promises never to throw; if it does, refuse the pod rather than let it in unmeshed.
      request.log.error({ err, uid: admission.uid }, 'review failed');
      metrics.errors.inc({ reason: 'internal' });
      return failedResponse(apiVersion, admission.uid, `webhook failure: ${(err as Error)?.message ?? String(err)}`);
    }
    const outcome = reviewed;
    countOutcome(metrics, outcome);
    request.log.info(
      {
        uid: admission.uid,
        operation: admission.operation,
        resource: admission.resource?.resource,
        namespace: admission.namespace,
        name: admission.name,
        ...(admission.name ? {} : generateNameField(admission.object)),
        ...(namespaceMode ? { namespaceMode } : {}),
        outcome: outcome.kind,
        ...(outcome.kind === 'injected' ? { mode: outcome.mode, patchOps: outcome.patch.length, ...(outcome.warnings ? { warnings: outcome.warnings } : {}) } : {}),
        ...(outcome.kind === 'skipped' ? { reason: outcome.reason } : {}),
        ...(outcome.kind === 'rejected' ? { message: outcome.message } : {}),
      },
      'admission review',
    );
    if (outcome.kind === 'injected' && (request.log.level === 'debug' || request.log.level === 'trace')) {
      request.log.debug({ uid: admission.uid, patch: outcome.patch }, 'patch');
    }
    return reply.type('application/json; charset=utf-8').send(serializeReview(reviewResponse(apiVersion, admission.uid, outcome)));
  }
}

function clientError(reply: FastifyReply, metrics: WebhookMetrics, code: 400 | 415, reason: ErrorReason, message: string): FastifyReply {
  metrics.errors.inc({ reason });
  return reply.code(code).send({ statusCode: code, error: code === 415 ? 'Unsupported Media Type' : 'Bad Request', message });
}

/**
 * Pods of a Deployment, Job, … arrive without a name (the API server makes one up after admission);
 * their `generateName` is the only way to tell from the log whose pod it was. Bounded: it is input.
 */
function generateNameField(object: unknown): { generateName?: string } {
  const generateName = (object as { metadata?: { generateName?: unknown } } | undefined)?.metadata?.generateName;
  if (typeof generateName !== 'string' || generateName === '') return {};
  return { generateName: generateName.length <= 253 ? generateName : `${generateName.slice(0, 253)}…` };
}
