import type { V1MutatingWebhook, V1MutatingWebhookConfiguration, V1Pod } from '@kubernetes/client-node';
import { applyPatch, type Operation } from 'fast-json-patch';
import { beforeAll, expect, it } from 'vitest';
import { defaultInjectionConfig, type InjectionConfig } from '../../webhook/config/injection-config.js';
import { parseInjectionConfig } from '../../webhook/config/parse-config.js';
import { buildWebhookApp } from '../../webhook/server/app.js';
import { describeWhenAvailable, missingCommand } from '../support/requirements.js';
import { selectorMatches } from './label-selector.js';
import { findObject, renderKustomization } from './render.js';

/**
 * Per-namespace mode and "never two proxies", end to end over the rendered manifests: for a
 * namespace's labels and a pod, the entries of our MutatingWebhookConfiguration that the API
 * server would call (at most one), the webhook's answer on that entry's path, then the entries of
 * Istio's own injector (default revision, as its istio-discovery chart renders them;
 * /work/shared/reference/istio-injector-iptables.md §1.4) that would still fire on the result.
 */
const missingKubectl = missingCommand('kubectl', 'install Debian package kubernetes-client; .ci/run does');
const SYSTEM = ['kube-system', 'kube-public', 'kube-node-lease', 'local-path-storage'];

type Expr = { key: string; operator: string; values?: string[] };
const sel = (...matchExpressions: Expr[]) => ({ matchExpressions });
const inject = 'sidecar.istio.io/inject';
/** Istio's entries; `auto.` only with sidecarInjectorWebhook.enableNamespacesByDefault=true. */
const ISTIO_ENTRIES: Array<Pick<V1MutatingWebhook, 'name' | 'namespaceSelector' | 'objectSelector'>> = [
  {
    name: 'rev.namespace.sidecar-injector.istio.io',
    namespaceSelector: sel({ key: 'istio.io/rev', operator: 'In', values: ['default'] }, { key: 'istio-injection', operator: 'DoesNotExist' }),
    objectSelector: sel({ key: inject, operator: 'NotIn', values: ['false'] }),
  },
  {
    name: 'rev.object.sidecar-injector.istio.io',
    namespaceSelector: sel({ key: 'istio.io/rev', operator: 'DoesNotExist' }, { key: 'istio-injection', operator: 'DoesNotExist' }),
    objectSelector: sel({ key: inject, operator: 'NotIn', values: ['false'] }, { key: 'istio.io/rev', operator: 'In', values: ['default'] }),
  },
  {
    name: 'namespace.sidecar-injector.istio.io',
    namespaceSelector: sel({ key: 'istio-injection', operator: 'In', values: ['enabled'] }),
    objectSelector: sel({ key: inject, operator: 'NotIn', values: ['false'] }),
  },
  {
    name: 'object.sidecar-injector.istio.io',
    namespaceSelector: sel({ key: 'istio-injection', operator: 'DoesNotExist' }, { key: 'istio.io/rev', operator: 'DoesNotExist' }),
    objectSelector: sel({ key: inject, operator: 'In', values: ['true'] }, { key: 'istio.io/rev', operator: 'DoesNotExist' }),
  },
  {
    name: 'auto.sidecar-injector.istio.io',
    namespaceSelector: sel(
      { key: 'istio-injection', operator: 'DoesNotExist' },
      { key: 'istio.io/rev', operator: 'DoesNotExist' },
      { key: 'kubernetes.io/metadata.name', operator: 'NotIn', values: SYSTEM },
    ),
    objectSelector: sel({ key: inject, operator: 'DoesNotExist' }, { key: 'istio.io/rev', operator: 'DoesNotExist' }),
  },
];

const fires = (w: Pick<V1MutatingWebhook, 'namespaceSelector' | 'objectSelector'>, ns: Record<string, string>, pod: V1Pod) =>
  selectorMatches(w.namespaceSelector, ns) && selectorMatches(w.objectSelector, pod.metadata?.labels ?? {});

function pod(labels: Record<string, string> = {}, annotations: Record<string, string> = {}): V1Pod {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'web-1', namespace: 'shop', labels: { app: 'web', ...labels }, annotations },
    spec: { containers: [{ name: 'web', image: 'nginx', ports: [{ containerPort: 8080 }] }] },
  };
}

type Result = 'apisix' | 'istio' | 'none' | 'refused';

describeWhenAvailable('per-namespace mode over the rendered webhook configuration', missingKubectl, () => {
  let ours: V1MutatingWebhook[];
  beforeAll(() => {
    ours = findObject<V1MutatingWebhookConfiguration>(renderKustomization('manifests'), 'MutatingWebhookConfiguration').webhooks!;
  });

  /** Our webhook (first, by configuration name), then Istio's on what ours returned. */
  async function admit(nsLabels: Record<string, string>, p: V1Pod, config: InjectionConfig = defaultInjectionConfig, istioAuto = false) {
    const ns = { 'kubernetes.io/metadata.name': 'shop', ...nsLabels };
    const called = ours.filter((w) => fires(w, ns, p));
    expect(called.length, `entries firing: ${called.map((w) => w.name).join(', ')}`).toBeLessThanOrEqual(1);
    let after = p;
    let result: Result = 'none';
    if (called.length === 1) {
      const app = buildWebhookApp({ config, logLevel: 'silent' });
      const res = await app.inject({
        method: 'POST',
        url: called[0]!.clientConfig.service!.path!,
        headers: { 'content-type': 'application/json' },
        payload: { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request: { uid: 'u', kind: { group: '', version: 'v1', kind: 'Pod' }, resource: { group: '', version: 'v1', resource: 'pods' }, operation: 'CREATE', namespace: 'shop', object: p } },
      });
      const response = res.json().response as { allowed: boolean; patch?: string };
      if (!response.allowed) return { entry: called[0]!.name, result: 'refused' as Result, istio: [] as string[] };
      if (response.patch) {
        after = applyPatch(structuredClone(p), JSON.parse(Buffer.from(response.patch, 'base64').toString()) as Operation[]).newDocument;
        if (after.metadata?.annotations?.['apisix-mesh.io/status']) result = 'apisix';
      }
    }
    const istio = ISTIO_ENTRIES.filter((w) => (istioAuto || !w.name.startsWith('auto.')) && fires(w, ns, after)).map((w) => w.name);
    if (istio.length > 0) {
      expect(result, 'APISIX and Envoy in one pod').not.toBe('apisix');
      result = 'istio';
    }
    return { entry: called[0]?.name, result, istio };
  }

  it('a namespace labelled apisix-mesh.io/mode=sidecar gets APISIX, whatever its Istio label; a pod may still choose none', async () => {
    expect(await admit({ 'apisix-mesh.io/mode': 'sidecar' }, pod())).toMatchObject({ entry: 'namespace.sidecar-injector.apisix-mesh.io', result: 'apisix' });
    expect(await admit({ 'apisix-mesh.io/mode': 'sidecar', 'istio-injection': 'enabled' }, pod())).toMatchObject({ result: 'apisix', istio: [] });
    // even with defaultMode none mesh-wide: the namespace chose
    const none = parseInjectionConfig('defaultMode: none\n', 'c.yaml');
    expect(await admit({ 'apisix-mesh.io/mode': 'sidecar' }, pod(), none)).toMatchObject({ result: 'apisix' });
    expect(await admit({ 'apisix-mesh.io/mode': 'sidecar', 'istio-injection': 'enabled' }, pod({}, { 'apisix-mesh.io/mode': 'none' }))).toMatchObject({
      result: 'istio',
      istio: ['namespace.sidecar-injector.istio.io'],
    });
  });

  it('istio-injection=enabled namespaces follow defaultMode; apisix-mesh.io/mode=none keeps a namespace Istio\'s alone', async () => {
    expect(await admit({ 'istio-injection': 'enabled' }, pod())).toMatchObject({ entry: 'istio.sidecar-injector.apisix-mesh.io', result: 'apisix' });
    const none = parseInjectionConfig('defaultMode: none\n', 'c.yaml');
    expect(await admit({ 'istio-injection': 'enabled' }, pod(), none)).toMatchObject({ result: 'istio' });
    expect(await admit({ 'istio-injection': 'enabled' }, pod({}, { 'apisix-mesh.io/mode': 'sidecar' }), none)).toMatchObject({ result: 'apisix' });
    // the label works as the annotation does, wherever the pod is (the annotation wins when both are set)
    expect(await admit({ 'istio-injection': 'enabled' }, pod({ 'apisix-mesh.io/mode': 'sidecar' }), none)).toMatchObject({ result: 'apisix' });
    expect(await admit({ 'istio-injection': 'enabled' }, pod({ 'apisix-mesh.io/mode': 'none' }))).toMatchObject({ result: 'istio' });
    expect(await admit({ 'istio-injection': 'enabled' }, pod({ 'apisix-mesh.io/mode': 'sidecar' }, { 'apisix-mesh.io/mode': 'none' }))).toMatchObject({ result: 'istio' });
    expect(await admit({ 'istio-injection': 'enabled' }, pod({ 'apisix-mesh.io/mode': 'yes' }))).toMatchObject({ result: 'refused' });
    expect(await admit({ 'istio-injection': 'enabled', 'apisix-mesh.io/mode': 'none' }, pod())).toMatchObject({ entry: undefined, result: 'istio' });
    expect(await admit({ 'istio.io/rev': 'default' }, pod())).toMatchObject({ entry: 'rev.sidecar-injector.apisix-mesh.io', result: 'apisix', istio: [] });
  });

  it('a pod labelled apisix-mesh.io/mode=sidecar in an unlabelled namespace gets APISIX, even where Istio injects every namespace', async () => {
    expect(await admit({}, pod({ 'apisix-mesh.io/mode': 'sidecar' }), defaultInjectionConfig, true)).toMatchObject({
      entry: 'object.sidecar-injector.apisix-mesh.io',
      result: 'apisix',
      istio: [],
    });
    expect(await admit({}, pod())).toMatchObject({ entry: undefined, result: 'none' });
  });

  it('with istio-injection=disabled on the namespace no Istio entry fires, whatever the pod or the webhook order', async () => {
    for (const p of [pod(), pod({ [inject]: 'true' }), pod({ 'istio.io/rev': 'default' })]) {
      const ns = { 'kubernetes.io/metadata.name': 'shop', 'istio-injection': 'disabled', 'apisix-mesh.io/mode': 'sidecar' };
      expect(ISTIO_ENTRIES.filter((w) => fires(w, ns, p)).map((w) => w.name)).toEqual([]);
      expect((await admit(ns, p, defaultInjectionConfig, true)).result).toBe('apisix');
    }
  });

  it('if Istio\'s injector ran first after all, the pod is refused, never given both proxies', async () => {
    const envoyPod = pod({}, { 'sidecar.istio.io/status': '{"containers":["istio-proxy"]}' });
    expect(await admit({ 'apisix-mesh.io/mode': 'sidecar', 'istio-injection': 'enabled' }, envoyPod)).toMatchObject({ result: 'refused' });
  });

  it('answers an unknown namespace-mode path with 400 (the entry\'s failurePolicy decides), never a guess', async () => {
    const app = buildWebhookApp({ logLevel: 'silent' });
    const res = await app.inject({ method: 'POST', url: '/inject/gateway', headers: { 'content-type': 'application/json' }, payload: '{}' });
    expect(res.statusCode).toBe(400);
    expect(res.json().message).toMatch(/unknown path \/inject\/gateway/);
  });
});
