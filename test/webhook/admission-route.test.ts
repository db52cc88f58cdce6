import { Pod } from 'kubernetes-models/v1';
import { describe, expect, it } from 'vitest';
import { buildWebhookApp } from '../../webhook/server/app.js';
import type { AdmissionReview } from '../../webhook/injection/admission-types.js';
import { applyPatch, decodePatch, podCreateReview, postReview } from './helpers.js';

// HTTP behaviour of POST /inject through Fastify's `inject` (no sockets), with the real injection
// behind it: every status code of the issue, for admission.k8s.io/v1 and v1beta1.

const app = buildWebhookApp({ logLevel: 'silent' });

type PodObject = { metadata: Record<string, any>; spec: Record<string, any> };

describe.each(['admission.k8s.io/v1', 'admission.k8s.io/v1beta1'] as const)('POST /inject with %s', (apiVersion) => {
  const review = () => ({ ...podCreateReview(), apiVersion });

  it('injects a Deployment pod: echoes apiVersion, kind and uid; the base64 JSONPatch gives a valid injected pod', async () => {
    const body = review();
    const res = await postReview(app, body);
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toMatch(/^application\/json/);
    const answer = res.json<AdmissionReview>();
    expect(answer.apiVersion).toBe(apiVersion);
    expect(answer.kind).toBe('AdmissionReview');
    expect(answer.request).toBeUndefined();
    expect(answer.response).toMatchObject({ uid: body.request.uid, allowed: true, patchType: 'JSONPatch' });

    const pod = applyPatch(body.request.object as PodObject, decodePatch(answer));
    expect(pod.metadata.labels['sidecar.istio.io/inject']).toBe('false');
    expect(pod.metadata.annotations['apisix-mesh.io/status']).toBeTypeOf('string');
    const names = [...(pod.spec.initContainers ?? []), ...pod.spec.containers].map((c: { name: string }) => c.name);
    expect(names).toContain('reviews');
    expect(names.length).toBeGreaterThanOrEqual(3);
    new Pod(pod as never).validate();
  });

  it('answers an already injected pod with allowed and no patch', async () => {
    const first = review();
    const injected = applyPatch(first.request.object, decodePatch((await postReview(app, first)).json()));
    const again = review();
    again.request.object = injected;
    const res = await postReview(app, again);
    expect(res.statusCode).toBe(200);
    const answer = res.json<AdmissionReview>();
    expect(answer.response).toEqual({ uid: again.request.uid, allowed: true });
  });

  it('adds only Istio traffic annotations to an APISIX gateway pod', async () => {
    const body = review();
    const pod = body.request.object as PodObject;
    pod.metadata.labels['app.kubernetes.io/name'] = 'apisix';
    const answer = (await postReview(app, body)).json<AdmissionReview>();
    expect(answer.response).toMatchObject({ allowed: true, patchType: 'JSONPatch' });
    const patched = applyPatch(pod, decodePatch(answer));
    expect(patched.metadata.annotations['traffic.sidecar.istio.io/excludeInboundPorts']).toBe('80,443');
    expect(patched.metadata.labels['sidecar.istio.io/inject']).toBe('true');
    expect(patched.spec.containers).toEqual(pod.spec.containers);
  });

  it('allows anything that is not a Pod CREATE without a patch', async () => {
    const update = review();
    update.request.operation = 'UPDATE';
    const deployment = review();
    deployment.request.kind = { group: 'apps', version: 'v1', kind: 'Deployment' };
    deployment.request.resource = { group: 'apps', version: 'v1', resource: 'deployments' };
    for (const body of [update, deployment]) {
      const res = await postReview(app, body);
      expect(res.statusCode).toBe(200);
      expect(res.json<AdmissionReview>()).toEqual({ apiVersion, kind: 'AdmissionReview', response: { uid: body.request.uid, allowed: true } });
    }
  });

  it('allows an opted-out pod without a patch', async () => {
    const body = review();
    (body.request.object as PodObject).metadata.annotations['apisix-mesh.io/mode'] = 'none';
    expect((await postReview(app, body)).json<AdmissionReview>().response).toEqual({ uid: body.request.uid, allowed: true });
  });

  it('refuses a pod with an invalid traffic annotation: 200, allowed false, message naming the annotation', async () => {
    const body = review();
    (body.request.object as PodObject).metadata.annotations['traffic.sidecar.istio.io/includeInboundPorts'] = '9080,70000';
    const res = await postReview(app, body);
    expect(res.statusCode).toBe(200);
    const answer = res.json<AdmissionReview>();
    expect(answer.apiVersion).toBe(apiVersion);
    expect(answer.response?.uid).toBe(body.request.uid);
    expect(answer.response?.allowed).toBe(false);
    expect(answer.response?.patch).toBeUndefined();
    expect(answer.response?.status?.code).toBe(403);
    expect(answer.response?.status?.message).toContain('traffic.sidecar.istio.io/includeInboundPorts');
    expect(answer.response?.status?.message).toContain('70000');
  });

  it('refuses an unknown mode with a message naming the annotation', async () => {
    const body = review();
    (body.request.object as PodObject).metadata.annotations['apisix-mesh.io/mode'] = 'proxy';
    const answer = (await postReview(app, body)).json<AdmissionReview>();
    expect(answer.response?.allowed).toBe(false);
    expect(answer.response?.status?.message).toContain('apisix-mesh.io/mode');
  });

  it('refuses a review without request.uid, echoing the version', async () => {
    const body = review() as any;
    delete body.request.uid;
    const answer = (await postReview(app, body)).json<AdmissionReview>();
    expect(answer).toMatchObject({ apiVersion, kind: 'AdmissionReview', response: { uid: '', allowed: false } });
    expect(answer.response?.status?.message).toMatch(/no uid/);
  });

  it('accepts a charset parameter on application/json', async () => {
    const res = await postReview(app, review(), 'application/json; charset=utf-8');
    expect(res.statusCode).toBe(200);
    expect(res.json<AdmissionReview>().response?.allowed).toBe(true);
  });
});

describe('POST /inject: what is not an AdmissionReview', () => {
  it.each([
    ['text/plain', 'hello'],
    ['application/xml', '<AdmissionReview/>'],
    ['application/x-www-form-urlencoded', 'a=b'],
    ['application/json-patch+json', '[]'],
  ])('answers Content-Type %s with 415 and a JSON reason', async (type, payload) => {
    const res = await postReview(app, payload, type);
    expect(res.statusCode).toBe(415);
    expect(res.json()).toMatchObject({ statusCode: 415, message: expect.stringContaining('want application/json') });
  });

  it('answers a body without Content-Type with 415', async () => {
    const res = await app.inject({ method: 'POST', url: '/inject', payload: Buffer.from('{"kind":"AdmissionReview"}') });
    expect(res.statusCode).toBe(415);
  });

  it('answers a missing or empty body with 400 "no body found"', async () => {
    for (const res of [
      await app.inject({ method: 'POST', url: '/inject' }),
      await app.inject({ method: 'POST', url: '/inject', headers: { 'content-type': 'application/json' }, payload: '' }),
    ]) {
      expect(res.statusCode).toBe(400);
      expect(res.json()).toMatchObject({ statusCode: 400, message: 'no body found' });
    }
  });

  it('answers a body over the limit with 400, and one at the limit normally', async () => {
    const small = buildWebhookApp({ logLevel: 'silent', maxBodyBytes: 4096 });
    const over = await postReview(small, JSON.stringify({ pad: 'x'.repeat(5000) }));
    expect(over.statusCode).toBe(400);
    expect(over.json().message).toMatch(/larger than 4096 bytes/);
    const body = JSON.stringify({ pad: 'x'.repeat(4096 - 10) });
    expect(body.length).toBe(4096);
    const at = await postReview(small, body);
    expect(at.statusCode).toBe(200);
    expect(at.json<AdmissionReview>().response?.allowed).toBe(false);
  });

  it('answers the default limit (6 MiB, as Istio) with 400', async () => {
    const res = await postReview(app, JSON.stringify({ pad: 'x'.repeat(6 * 1024 * 1024) }));
    expect(res.statusCode).toBe(400);
  });

  it.each([
    ['invalid JSON', '{"apiVersion": "admission.k8s.io/v1",', /not valid JSON/],
    ['a JSON array', '[1,2,3]', /expected a JSON object, got an array/],
    ['a JSON string', '"AdmissionReview"', /got a string/],
    ['null', 'null', /got null/],
    ['a bare Pod', JSON.stringify({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p' } }), /unsupported apiVersion "v1"/],
    ['an unknown version', JSON.stringify({ apiVersion: 'admission.k8s.io/v2', kind: 'AdmissionReview', request: { uid: 'u' } }), /unsupported apiVersion/],
    ['a wrong kind', JSON.stringify({ apiVersion: 'admission.k8s.io/v1', kind: 'ConversionReview', request: { uid: 'u' } }), /unsupported kind "ConversionReview"/],
    ['a review without request', JSON.stringify({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview' }), /has no request/],
  ])('answers %s with 200, allowed false and the reason', async (_name, payload, reason) => {
    const res = await postReview(app, payload);
    expect(res.statusCode).toBe(200);
    const answer = res.json<AdmissionReview>();
    expect(answer.kind).toBe('AdmissionReview');
    expect(['admission.k8s.io/v1', 'admission.k8s.io/v1beta1']).toContain(answer.apiVersion);
    expect(answer.response?.allowed).toBe(false);
    expect(answer.response?.status?.message).toMatch(reason);
  });

  it('echoes the uid and version of a review it cannot use', async () => {
    const body = { apiVersion: 'admission.k8s.io/v1beta1', kind: 'Nope', request: { uid: 'abc-123' } };
    expect((await postReview(app, body)).json<AdmissionReview>()).toMatchObject({
      apiVersion: 'admission.k8s.io/v1beta1',
      response: { uid: 'abc-123', allowed: false },
    });
  });

  it('refuses the pod (200, allowed false) when the review itself fails, instead of a 500', async () => {
    const failing = buildWebhookApp({
      logLevel: 'silent',
      review: () => {
        throw new Error('boom');
      },
    });
    const body = podCreateReview();
    const res = await postReview(failing, body);
    expect(res.statusCode).toBe(200);
    expect(res.json<AdmissionReview>().response).toMatchObject({ uid: body.request.uid, allowed: false, status: { message: 'webhook failure: boom' } });
  });

  it('answers other methods and paths with 404', async () => {
    expect((await app.inject({ method: 'GET', url: '/inject' })).statusCode).toBe(404);
    expect((await app.inject({ method: 'POST', url: '/mutate', headers: { 'content-type': 'application/json' }, payload: '{}' })).statusCode).toBe(404);
  });
});

describe('health', () => {
  it('/healthz is always ok; /readyz follows readiness', async () => {
    const readiness = { ready: true } as { ready: boolean; reason?: string };
    const probed = buildWebhookApp({ logLevel: 'silent', readiness });
    expect((await probed.inject('/healthz')).json()).toEqual({ status: 'ok' });
    expect((await probed.inject('/readyz')).statusCode).toBe(200);
    readiness.ready = false;
    readiness.reason = 'shutting down';
    const res = await probed.inject('/readyz');
    expect(res.statusCode).toBe(503);
    expect(res.json()).toEqual({ status: 'not ready', reason: 'shutting down' });
    expect((await probed.inject('/healthz')).statusCode).toBe(200);
  });
});
