/**
 * Re-invocation (`reinvocationPolicy: IfNeeded`): the API server calls the webhook again with the pod
 * as it stands after later webhooks, decoded with the API server's defaults filled in. The injection
 * must then need no patch, unless something it added was really changed.
 */
import type { V1Pod } from '@kubernetes/client-node';
import fjp from 'fast-json-patch';
import { describe, expect, it } from 'vitest';
import { defaultInjectionConfig, type InjectionConfig } from '../../webhook/config/injection-config.js';
import { reviewAdmission } from '../../webhook/injection/review.js';
import { isDefaultedFrom } from '../../webhook/injection/reinjection.js';
import { podCreate, withApiServerDefaults } from './helpers.js';

const submitted: V1Pod = {
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name: 'p', namespace: 'shop' },
  spec: {
    initContainers: [{ name: 'setup', image: 'setup:1' }],
    containers: [{ name: 'app', image: 'app:1', ports: [{ containerPort: 8080 }] }],
  },
};

function injected(config: InjectionConfig): V1Pod {
  const outcome = reviewAdmission(podCreate(submitted), config);
  if (outcome.kind !== 'injected') throw new Error(JSON.stringify(outcome));
  return fjp.applyPatch(structuredClone(submitted), JSON.parse(JSON.stringify(outcome.patch))).newDocument;
}

describe('re-invocation after the API server filled in defaults', () => {
  it.each([
    ['classic', defaultInjectionConfig],
    ['native', { ...defaultInjectionConfig, nativeSidecars: true }],
  ])('needs no patch (%s placement)', (_name, config) => {
    const defaulted = withApiServerDefaults(injected(config));
    expect(defaulted).not.toEqual(injected(config)); // the defaults really are there
    expect(reviewAdmission(podCreate(defaulted), config)).toEqual({ kind: 'injected', mode: 'sidecar', patch: [] });
  });

  it('moves an init container added by a later webhook before the capture rules, keeping ours', () => {
    const pod = withApiServerDefaults(injected(defaultInjectionConfig));
    pod.spec!.initContainers!.push({ name: 'vault-agent-init', image: 'vault:1' });
    const outcome = reviewAdmission(podCreate(pod), defaultInjectionConfig);
    if (outcome.kind !== 'injected') throw new Error(JSON.stringify(outcome));
    const after = fjp.applyPatch(structuredClone(pod), JSON.parse(JSON.stringify(outcome.patch))).newDocument;
    expect(after.spec!.initContainers!.map((c) => c.name)).toEqual(['setup', 'vault-agent-init', 'apisix-mesh-config', 'apisix-mesh-init']);
    // Ours were kept as the API server defaulted them, not rewritten.
    expect(after.spec!.initContainers![3]).toEqual(pod.spec!.initContainers![2]);
  });

  it('replaces a sidecar part that was changed in another way', () => {
    const pod = withApiServerDefaults(injected(defaultInjectionConfig));
    pod.spec!.containers[0]!.image = 'attacker/agent:latest';
    pod.spec!.containers[1]!.env = [{ name: 'EXTRA', value: '1' }];
    const outcome = reviewAdmission(podCreate(pod), defaultInjectionConfig);
    if (outcome.kind !== 'injected') throw new Error(JSON.stringify(outcome));
    const after = fjp.applyPatch(structuredClone(pod), JSON.parse(JSON.stringify(outcome.patch))).newDocument;
    expect(after.spec!.containers[0]).toEqual(injected(defaultInjectionConfig).spec!.containers[0]);
    expect(after.spec!.containers[1]).toEqual(injected(defaultInjectionConfig).spec!.containers[1]);
  });

  it('counts only the API server defaults as "the same"', () => {
    expect(isDefaultedFrom({ a: 1, b: [{ c: 2 }] }, { a: 1, b: [{ c: 2, timeoutSeconds: 1 }], terminationMessagePath: '/dev/termination-log' })).toBe(true);
    expect(isDefaultedFrom({ a: 1 }, { a: 1, limits: {} })).toBe(false);
    expect(isDefaultedFrom({ a: 1 }, { a: 2 })).toBe(false);
    expect(isDefaultedFrom({ a: [1] }, { a: [1, 2] })).toBe(false);
    expect(isDefaultedFrom({}, { toString: 1 })).toBe(false);
  });
});
