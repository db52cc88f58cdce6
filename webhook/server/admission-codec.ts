import { shortQuote } from '../../cli/short-quote.js';
import type { AdmissionRequest, AdmissionReview } from '../injection/admission-types.js';
import type { ReviewOutcome } from '../injection/outcome.js';
import { serializePatch } from '../injection/patch-json.js';

/**
 * AdmissionReview in and out, as pure functions: the HTTP route only moves bytes. Both
 * `admission.k8s.io/v1` and `v1beta1` have the same shape; the answer echoes the version and kind
 * of the question, and `request.uid` as `response.uid`.
 */
export type AdmissionApiVersion = AdmissionReview['apiVersion'];

const API_VERSIONS: readonly string[] = ['admission.k8s.io/v1', 'admission.k8s.io/v1beta1'] satisfies AdmissionApiVersion[];

/**
 * The version used to answer a body whose version cannot be read. Istio falls back to v1beta1; this
 * webhook registers `admissionReviewVersions: [v1]`, so the API server only ever sends v1.
 */
export const FALLBACK_API_VERSION: AdmissionApiVersion = 'admission.k8s.io/v1';

/** HTTP-ish codes in `response.status.code`, which the API server shows with the denial. */
const CODE_BAD_REVIEW = 400;
const CODE_REJECTED = 403;

export type DecodedReview =
  | { ok: true; apiVersion: AdmissionApiVersion; request: AdmissionRequest }
  /** Not an AdmissionReview we can answer; `uid` is echoed when it could be read. */
  | { ok: false; apiVersion: AdmissionApiVersion; uid: string; message: string };

/** Parses and checks the envelope; the pod inside `request.object` is the injection's to check. */
export function decodeAdmissionReview(text: string): DecodedReview {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (err) {
    return bad(FALLBACK_API_VERSION, '', `body is not valid JSON: ${(err as Error).message}`);
  }
  if (!isObject(body)) return bad(FALLBACK_API_VERSION, '', `body is not an AdmissionReview: expected a JSON object, got ${describe(body)}`);
  const { apiVersion, kind, request } = body;
  const version = typeof apiVersion === 'string' && API_VERSIONS.includes(apiVersion) ? (apiVersion as AdmissionApiVersion) : null;
  const uid = isObject(request) && typeof request.uid === 'string' ? request.uid : '';
  if (version === null) {
    return bad(
      FALLBACK_API_VERSION,
      uid,
      `unsupported apiVersion ${quoteField(apiVersion)}: expected ${API_VERSIONS.join(' or ')}`,
    );
  }
  if (kind !== 'AdmissionReview') {
    return bad(version, uid, `unsupported kind ${quoteField(kind)}: expected AdmissionReview`);
  }
  if (!isObject(request)) return bad(version, uid, 'AdmissionReview has no request');
  if (typeof request.uid !== 'string' || request.uid === '') return bad(version, uid, 'AdmissionReview request has no uid');
  return { ok: true, apiVersion: version, request: request as unknown as AdmissionRequest };
}

/** The answer to a decoded review, from what the injection decided. */
export function reviewResponse(apiVersion: AdmissionApiVersion, uid: string, outcome: ReviewOutcome): AdmissionReview {
  switch (outcome.kind) {
    case 'injected':
      if (outcome.patch.length === 0) return allowed(apiVersion, uid);
      return {
        apiVersion,
        kind: 'AdmissionReview',
        response: {
          uid,
          allowed: true,
          // kubectl prints these to whoever created the pod (or its Job)
          ...(outcome.warnings ? { warnings: outcome.warnings } : {}),
          patchType: 'JSONPatch',
          // Same bytes as JSON.stringify, with the shared sidecar parts' JSON cached.
          patch: Buffer.from(serializePatch(outcome.patch)).toString('base64'),
        },
      };
    case 'skipped':
      return allowed(apiVersion, uid);
    case 'rejected':
      return denied(apiVersion, uid, outcome.message, CODE_REJECTED);
  }
}

/**
 * `JSON.stringify(review)`, cheaper for injected pods: the base64 patch (kilobytes) is spliced in
 * rather than scanned for characters to escape, since base64 has none.
 */
export function serializeReview(review: AdmissionReview): string {
  const response = review.response;
  if (response?.patch === undefined) return JSON.stringify(review);
  const { patch, ...rest } = response;
  const text = JSON.stringify({ ...review, response: rest });
  // `response` is the last member, so the text ends with the two braces that close it and the review.
  return `${text.slice(0, -2)},"patch":"${patch}"}}`;
}

/** The answer to a body that is not an AdmissionReview we can answer. */
export function undecodableResponse(decoded: Extract<DecodedReview, { ok: false }>): AdmissionReview {
  return denied(decoded.apiVersion, decoded.uid, decoded.message, CODE_BAD_REVIEW);
}

/** Refusal when something failed inside the webhook: the pod is refused, never let through half-done. */
export function failedResponse(apiVersion: AdmissionApiVersion, uid: string, message: string): AdmissionReview {
  return denied(apiVersion, uid, message, CODE_BAD_REVIEW);
}

function allowed(apiVersion: AdmissionApiVersion, uid: string): AdmissionReview {
  return { apiVersion, kind: 'AdmissionReview', response: { uid, allowed: true } };
}

function denied(apiVersion: AdmissionApiVersion, uid: string, message: string, code: number): AdmissionReview {
  return { apiVersion, kind: 'AdmissionReview', response: { uid, allowed: false, status: { code, message } } };
}

function bad(apiVersion: AdmissionApiVersion, uid: string, message: string): DecodedReview {
  return { ok: false, apiVersion, uid, message };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A field of the body for a message: a short quote of a string, the type of anything else (never the whole value). */
function quoteField(value: unknown): string {
  return typeof value === 'string' ? shortQuote(value) : value === undefined ? 'null' : describe(value);
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return typeof value === 'object' ? 'an object' : `a ${typeof value}`;
}
