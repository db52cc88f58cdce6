import fc from 'fast-check';
import type { Operation } from 'fast-json-patch';
import { describe, expect, it } from 'vitest';
import { decodeAdmissionReview, reviewResponse, serializeReview } from '../../webhook/server/admission-codec.js';

describe('serializeReview', () => {
  it('gives the same JSON as JSON.stringify for every kind of answer', () => {
    const op = fc.record({ op: fc.constantFrom('add', 'replace', 'remove'), path: fc.string(), value: fc.jsonValue({ maxDepth: 3 }) });
    fc.assert(
      fc.property(
        fc.constantFrom('admission.k8s.io/v1', 'admission.k8s.io/v1beta1' as const),
        fc.string(),
        fc.oneof(
          fc.record({ kind: fc.constant('injected' as const), mode: fc.constantFrom('sidecar' as const, 'gateway' as const), patch: fc.array(op, { maxLength: 5 }) }),
          fc.record({ kind: fc.constant('skipped' as const), reason: fc.constant('host-network' as const) }),
          fc.record({ kind: fc.constant('rejected' as const), message: fc.string() }),
        ),
        (apiVersion, uid, outcome) => {
          const review = reviewResponse(apiVersion as 'admission.k8s.io/v1', uid, outcome as never);
          expect(JSON.parse(serializeReview(review))).toEqual(JSON.parse(JSON.stringify(review)));
        },
      ),
      { numRuns: 300 },
    );
  });

  it('carries the patch as base64 of its JSON', () => {
    const patch: Operation[] = [{ op: 'add', path: '/metadata/labels/a~1b', value: 'é"\\' }];
    const text = serializeReview(reviewResponse('admission.k8s.io/v1', 'u"1', { kind: 'injected', mode: 'sidecar', patch }));
    const parsed = JSON.parse(text);
    expect(parsed.response.uid).toBe('u"1');
    expect(JSON.parse(Buffer.from(parsed.response.patch, 'base64').toString('utf8'))).toEqual(patch);
  });
});

describe('decodeAdmissionReview', () => {
  it('keeps the request as sent and reads the version', () => {
    const decoded = decodeAdmissionReview(JSON.stringify({ apiVersion: 'admission.k8s.io/v1beta1', kind: 'AdmissionReview', request: { uid: 'x', operation: 'CREATE' } }));
    expect(decoded).toEqual({ ok: true, apiVersion: 'admission.k8s.io/v1beta1', request: { uid: 'x', operation: 'CREATE' } });
  });

  it('quotes at most a prefix of a bad apiVersion or kind, and never a whole object', () => {
    const long = decodeAdmissionReview(JSON.stringify({ apiVersion: 'v'.repeat(1_000_000), kind: 'AdmissionReview', request: { uid: 'u' } }));
    expect(!long.ok && long.message).toMatch(/^unsupported apiVersion "v{64}"… \(1000000 characters\): expected admission\.k8s\.io\/v1 or admission\.k8s\.io\/v1beta1$/);
    const kind = decodeAdmissionReview(JSON.stringify({ apiVersion: 'admission.k8s.io/v1', kind: { big: 'k'.repeat(1_000_000) }, request: { uid: 'u' } }));
    expect(!kind.ok && kind.message).toBe('unsupported kind an object: expected AdmissionReview');
    const missing = decodeAdmissionReview(JSON.stringify({ kind: 'AdmissionReview', request: { uid: 'u' } }));
    expect(!missing.ok && missing.message).toBe('unsupported apiVersion null: expected admission.k8s.io/v1 or admission.k8s.io/v1beta1');
  });

  it('refuses an empty uid', () => {
    const decoded = decodeAdmissionReview(JSON.stringify({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request: { uid: '' } }));
    expect(decoded).toMatchObject({ ok: false, message: 'AdmissionReview request has no uid' });
  });
});
