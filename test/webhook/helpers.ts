import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import jsonpatch, { type Operation } from 'fast-json-patch';
import type { FastifyInstance } from 'fastify';
import type { AdmissionReview } from '../../webhook/injection/admission-types.js';

const here = dirname(fileURLToPath(import.meta.url));

/** The controller-created Bookinfo pod of `testdata/pod-create-review.json`, fresh on every call. */
export function podCreateReview(): AdmissionReview & { request: NonNullable<AdmissionReview['request']> } {
  return JSON.parse(readFileSync(join(here, 'testdata', 'pod-create-review.json'), 'utf8'));
}

export async function postReview(app: FastifyInstance, body: unknown, contentType = 'application/json') {
  const res = await app.inject({
    method: 'POST',
    url: '/inject',
    headers: { 'content-type': contentType },
    payload: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return res;
}

/** The JSON Patch carried by an AdmissionResponse, decoded from base64. */
export function decodePatch(review: AdmissionReview): Operation[] {
  const patch = review.response?.patch;
  if (patch === undefined) throw new Error('the response carries no patch');
  return JSON.parse(Buffer.from(patch, 'base64').toString('utf8')) as Operation[];
}

/** Applies `ops` to a copy of `doc` with an RFC 6902 implementation, validating every operation. */
export function applyPatch<T>(doc: T, ops: Operation[]): T {
  return jsonpatch.applyPatch(structuredClone(doc), ops, true, false).newDocument;
}
