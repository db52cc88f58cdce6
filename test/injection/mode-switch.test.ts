// A manifest injected in sidecar mode (e.g. `apisix-mesh inject` output kept in git) and then
// switched to `apisix-mesh.io/mode: gateway` or `none` loses the APISIX sidecar: none must not keep a
// mesh it opted out of, and gateway must not end up with APISIX and Envoy (two proxies).
import type { V1Pod } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { defaultInjectionConfig } from '../../webhook/config/injection-config.js';
import { injectPod } from '../../webhook/injection/inject-pod.js';
import { reviewAdmission } from '../../webhook/injection/review.js';
import type { AdmissionRequest } from '../../webhook/injection/admission-types.js';
import { applyPatch } from 'fast-json-patch';

const app: V1Pod = {
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name: 'web', namespace: 'shop', labels: { app: 'web' }, annotations: { team: 'a' } },
  spec: { containers: [{ name: 'web', image: 'nginx', ports: [{ containerPort: 8080 }] }], volumes: [{ name: 'data', emptyDir: {} }] },
};

function injected(): V1Pod {
  const r = injectPod(app, 'sidecar', defaultInjectionConfig);
  if (r.kind !== 'injected') throw new Error(r.message);
  return r.pod;
}

function switchedTo(mode: string): V1Pod {
  const pod = structuredClone(injected());
  pod.metadata!.annotations = { ...pod.metadata!.annotations, 'apisix-mesh.io/mode': mode };
  return pod;
}

function review(pod: V1Pod) {
  return reviewAdmission({ uid: 'u', kind: { group: '', version: 'v1', kind: 'Pod' }, resource: { group: '', version: 'v1', resource: 'pods' }, operation: 'CREATE', namespace: 'shop', object: pod } as AdmissionRequest, defaultInjectionConfig);
}

const meshNames = /^apisix-mesh-/;

describe('switching an injected pod to another mode', () => {
  it('none: the sidecar, its init containers, volumes and annotations are taken out', () => {
    const pod = switchedTo('none');
    const outcome = review(pod);
    expect(outcome).toMatchObject({ kind: 'injected', mode: 'none' });
    const after = applyPatch(structuredClone(pod), outcome.kind === 'injected' ? outcome.patch : []).newDocument as V1Pod;
    expect(after.spec!.containers).toEqual(app.spec!.containers);
    expect(after.spec!.initContainers ?? []).toEqual([]);
    expect(after.spec!.volumes).toEqual(app.spec!.volumes);
    expect(Object.keys(after.metadata!.annotations!).filter((k) => k.startsWith('apisix-mesh.io/') && k !== 'apisix-mesh.io/mode')).toEqual([]);
    // and a second review leaves it alone
    expect(review(after)).toMatchObject({ kind: 'skipped' });
  });

  it('gateway: no APISIX sidecar is left for Istio\'s Envoy to sit beside', () => {
    const pod = switchedTo('gateway');
    const outcome = review(pod);
    expect(outcome).toMatchObject({ kind: 'injected', mode: 'gateway' });
    const after = applyPatch(structuredClone(pod), outcome.kind === 'injected' ? outcome.patch : []).newDocument as V1Pod;
    expect([...after.spec!.containers, ...(after.spec!.initContainers ?? [])].filter((c) => meshNames.test(c.name))).toEqual([]);
    expect((after.spec!.volumes ?? []).filter((v) => meshNames.test(v.name))).toEqual([]);
    expect(after.metadata!.labels!['sidecar.istio.io/inject']).toBe('true');
    expect(after.metadata!.annotations!['traffic.sidecar.istio.io/excludeInboundPorts']).toBeDefined();
    expect(after.metadata!.annotations!['apisix-mesh.io/status']).toBeUndefined();
  });

  it('a pod that never had the sidecar: none stays a skip, gateway only adds its annotations', () => {
    expect(review({ ...app, metadata: { ...app.metadata, annotations: { 'apisix-mesh.io/mode': 'none' } } })).toEqual({ kind: 'skipped', reason: 'mode-none' });
    const gw = injectPod({ ...app, metadata: { ...app.metadata, annotations: { 'apisix-mesh.io/mode': 'gateway' } } }, 'gateway', defaultInjectionConfig);
    expect(gw.kind === 'injected' && gw.pod.spec).toBe(app.spec); // shared, untouched
  });
});
