// Istio's per-pod proxy sizing annotations (sidecar.istio.io/proxyCPU, proxyMemory, proxyCPULimit,
// proxyMemoryLimit) on the APISIX container: exact when set, refused with the annotation's name when
// the API server would refuse the pod, never a silent default.
import fc from 'fast-check';
import type { V1Pod } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { defaultInjectionConfig } from '../../webhook/config/injection-config.js';
import { injectPod } from '../../webhook/injection/inject-pod.js';
import { PodRejection } from '../../webhook/injection/capture.js';
import { proxyResourcesFor } from '../../webhook/injection/proxy-resources.js';
import { NAMES } from '../../webhook/injection/sidecar-parts.js';
import { annotatedPod } from './helpers.js';

const injected = (annotations: Record<string, string>): V1Pod => {
  const result = injectPod(annotatedPod(annotations), 'sidecar', defaultInjectionConfig);
  if (result.kind === 'rejected') throw new Error(result.message);
  return result.pod;
};
const defaults = defaultInjectionConfig.resources.apisix;
const refusal = (annotations: Record<string, string>): string => {
  try {
    proxyResourcesFor(annotations, defaults);
  } catch (err) {
    expect(err).toBeInstanceOf(PodRejection);
    return (err as Error).message;
  }
  throw new Error('not refused');
};

describe('proxy resource annotations', () => {
  it('none set: the configured defaults, the very object (the shared sidecar part is not copied)', () => {
    expect(proxyResourcesFor({ 'sidecar.istio.io/inject': 'true' }, defaults)).toBe(defaults);
  });

  it('any set: exactly what the annotations say, as Istio\'s template (no default mixed in)', () => {
    expect(proxyResourcesFor({ 'sidecar.istio.io/proxyMemoryLimit': '1Gi' }, defaults)).toEqual({ limits: { memory: '1Gi' } });
    expect(proxyResourcesFor({ 'sidecar.istio.io/proxyCPU': '100m', 'sidecar.istio.io/proxyCPULimit': '2' }, defaults)).toEqual({ requests: { cpu: '100m' }, limits: { cpu: '2' } });
    expect(proxyResourcesFor({ 'sidecar.istio.io/proxyCPU': '.5', 'sidecar.istio.io/proxyMemory': '128e6' }, defaults)).toEqual({ requests: { cpu: '.5', memory: '128e6' } });
  });

  it('the APISIX container of the injected pod carries them; the agent keeps its own', () => {
    const containers = injected({ 'sidecar.istio.io/proxyMemory': '300Mi', 'sidecar.istio.io/proxyMemoryLimit': '2Gi' }).spec!.containers;
    expect(containers.find((c) => c.name === NAMES.apisix)!.resources).toEqual({ requests: { memory: '300Mi' }, limits: { memory: '2Gi' } });
    expect(containers.find((c) => c.name === NAMES.agent)!.resources).toEqual(defaultInjectionConfig.resources.agent);
    // the shared part stays as configured for the next pod
    const plain = injected({});
    expect(plain.spec!.containers.find((c) => c.name === NAMES.apisix)!.resources).toEqual(defaults);
  });

  it('refuses what is not a quantity, naming the annotation and quoting the value short', () => {
    expect(refusal({ 'sidecar.istio.io/proxyMemory': '100mi' })).toMatch(/^annotation sidecar\.istio\.io\/proxyMemory: "100mi" is not a Kubernetes quantity/);
    for (const bad of ['', '-1', '1 Gi', '1GB', '1e3M', '0x10', '1e', 'Mi', '1.2.3', `${'9'.repeat(70)}`]) {
      expect(refusal({ 'sidecar.istio.io/proxyCPU': bad })).toMatch(/sidecar\.istio\.io\/proxyCPU: .* is not a Kubernetes quantity/);
    }
    expect(refusal({ 'sidecar.istio.io/proxyCPU': 'x'.repeat(10_000) }).length).toBeLessThan(300);
  });

  it('refuses a request above its limit (the API server would refuse the pod)', () => {
    expect(refusal({ 'sidecar.istio.io/proxyMemory': '2Gi', 'sidecar.istio.io/proxyMemoryLimit': '1024Mi' })).toMatch(
      /sidecar\.istio\.io\/proxyMemory: "2Gi" is more than sidecar\.istio\.io\/proxyMemoryLimit "1024Mi"/,
    );
    expect(refusal({ 'sidecar.istio.io/proxyCPU': '1.5', 'sidecar.istio.io/proxyCPULimit': '1000m' })).toMatch(/is more than/);
    // equal is fine, and units are compared by value
    expect(proxyResourcesFor({ 'sidecar.istio.io/proxyMemory': '1Gi', 'sidecar.istio.io/proxyMemoryLimit': '1024Mi' }, defaults)).toBeTruthy();
    expect(proxyResourcesFor({ 'sidecar.istio.io/proxyCPU': '500m', 'sidecar.istio.io/proxyCPULimit': '0.5' }, defaults)).toBeTruthy();
  });

  it('any string: a result or a PodRejection, never another error', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 80 }), fc.string({ maxLength: 80 }), (request, limit) => {
        try {
          proxyResourcesFor({ 'sidecar.istio.io/proxyCPU': request, 'sidecar.istio.io/proxyCPULimit': limit }, defaults);
        } catch (err) {
          if (!(err instanceof PodRejection)) throw err;
        }
      }),
    );
  });
});
