import type { V1Pod } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { defaultInjectionConfig } from '../../webhook/config/injection-config.js';
import { decide, type Decision } from '../../webhook/injection/decide.js';
import type { InjectionMode } from '../../webhook/injection/outcome.js';
import { reviewAdmission } from '../../webhook/injection/review.js';
import { podCreate } from './helpers.js';

interface Row {
  name: string;
  namespace?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  hostNetwork?: boolean;
  forced?: InjectionMode;
  expected: Decision | { kind: 'reject'; contains: string[] };
}

const APISIX = { 'app.kubernetes.io/name': 'apisix' };
const STATUS = { 'apisix-mesh.io/status': '{"initContainers":[],"containers":[],"volumes":[]}' };

/** The decision table (docs/injection.md, "The decision, in order"), one row per rule. */
const table: Row[] = [
  { name: 'plain pod → sidecar', expected: { kind: 'inject', mode: 'sidecar' } },
  { name: 'APISIX chart pod → gateway', labels: APISIX, expected: { kind: 'inject', mode: 'gateway' } },
  { name: 'app name other than apisix → sidecar', labels: { 'app.kubernetes.io/name': 'apisix-dashboard' }, expected: { kind: 'inject', mode: 'sidecar' } },
  { name: 'hostNetwork → skip', hostNetwork: true, expected: { kind: 'skip', reason: 'host-network' } },
  { name: 'hostNetwork beats a mode annotation', hostNetwork: true, annotations: { 'apisix-mesh.io/mode': 'sidecar' }, expected: { kind: 'skip', reason: 'host-network' } },
  { name: 'kube-system → skip', namespace: 'kube-system', expected: { kind: 'skip', reason: 'excluded-namespace' } },
  { name: 'kube-public → skip', namespace: 'kube-public', expected: { kind: 'skip', reason: 'excluded-namespace' } },
  { name: 'kube-node-lease → skip', namespace: 'kube-node-lease', expected: { kind: 'skip', reason: 'excluded-namespace' } },
  { name: 'local-path-storage → skip', namespace: 'local-path-storage', expected: { kind: 'skip', reason: 'excluded-namespace' } },
  { name: "the webhook's namespace → skip", namespace: 'apisix-mesh-system', expected: { kind: 'skip', reason: 'excluded-namespace' } },
  { name: 'istio-system is not special', namespace: 'istio-system', expected: { kind: 'inject', mode: 'sidecar' } },
  { name: 'label inject=false → skip', labels: { 'sidecar.istio.io/inject': 'false' }, expected: { kind: 'skip', reason: 'opt-out-label' } },
  { name: 'annotation inject=false → skip', annotations: { 'sidecar.istio.io/inject': 'false' }, expected: { kind: 'skip', reason: 'opt-out-annotation' } },
  { name: 'label true wins over annotation false', labels: { 'sidecar.istio.io/inject': 'true' }, annotations: { 'sidecar.istio.io/inject': 'false' }, expected: { kind: 'inject', mode: 'sidecar' } },
  { name: 'label false wins over annotation true', labels: { 'sidecar.istio.io/inject': 'false' }, annotations: { 'sidecar.istio.io/inject': 'true' }, expected: { kind: 'skip', reason: 'opt-out-label' } },
  { name: 'label with another value → default', labels: { 'sidecar.istio.io/inject': 'yes' }, expected: { kind: 'inject', mode: 'sidecar' } },
  { name: 'opt-out label beats the mode annotation', labels: { 'sidecar.istio.io/inject': 'false' }, annotations: { 'apisix-mesh.io/mode': 'sidecar' }, expected: { kind: 'skip', reason: 'opt-out-label' } },
  { name: 'our own label on an injected pod is not an opt-out', labels: { 'sidecar.istio.io/inject': 'false' }, annotations: STATUS, expected: { kind: 'inject', mode: 'sidecar' } },
  { name: 'mode sidecar on an APISIX pod', labels: APISIX, annotations: { 'apisix-mesh.io/mode': 'sidecar' }, expected: { kind: 'inject', mode: 'sidecar' } },
  { name: 'mode gateway on a plain pod', annotations: { 'apisix-mesh.io/mode': 'gateway' }, expected: { kind: 'inject', mode: 'gateway' } },
  { name: 'mode none → skip', annotations: { 'apisix-mesh.io/mode': 'none' }, expected: { kind: 'skip', reason: 'mode-none' } },
  { name: 'unknown mode → reject', annotations: { 'apisix-mesh.io/mode': 'ambient' }, expected: { kind: 'reject', contains: ['apisix-mesh.io/mode', '"ambient"', 'sidecar, gateway, none'] } },
  { name: 'mode values are case-sensitive', annotations: { 'apisix-mesh.io/mode': 'Sidecar' }, expected: { kind: 'reject', contains: ['apisix-mesh.io/mode', '"Sidecar"'] } },
  { name: 'forced mode beats the annotation', annotations: { 'apisix-mesh.io/mode': 'gateway' }, forced: 'sidecar', expected: { kind: 'inject', mode: 'sidecar' } },
  { name: 'forced mode beats an invalid annotation', annotations: { 'apisix-mesh.io/mode': 'bogus' }, forced: 'none', expected: { kind: 'skip', reason: 'mode-none' } },
  { name: 'forced mode does not beat an opt-out', annotations: { 'sidecar.istio.io/inject': 'false' }, forced: 'sidecar', expected: { kind: 'skip', reason: 'opt-out-annotation' } },
];

function podOf(row: Row): V1Pod {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'p', namespace: row.namespace ?? 'shop', labels: row.labels, annotations: row.annotations },
    spec: { hostNetwork: row.hostNetwork, containers: [{ name: 'app', image: 'app:1' }] },
  };
}

describe('the decision table', () => {
  it.each(table)('$name', (row) => {
    const decision = decide(podOf(row), row.namespace ?? 'shop', defaultInjectionConfig, row.forced);
    if ('contains' in row.expected) {
      expect(decision.kind).toBe('reject');
      for (const part of row.expected.contains) expect(decision.kind === 'reject' && decision.message).toContain(part);
    } else {
      expect(decision).toEqual(row.expected);
    }
  });

  it('uses the configured excluded namespaces and webhook namespace', () => {
    const config = { ...defaultInjectionConfig, excludedNamespaces: ['legacy'], webhookNamespace: 'mesh' };
    expect(decide(podOf({ name: '', expected: { kind: 'skip', reason: 'host-network' } }), 'legacy', config)).toEqual({ kind: 'skip', reason: 'excluded-namespace' });
    expect(decide(podOf({ name: '', expected: { kind: 'skip', reason: 'host-network' } }), 'mesh', config)).toEqual({ kind: 'skip', reason: 'excluded-namespace' });
    expect(decide(podOf({ name: '', expected: { kind: 'skip', reason: 'host-network' } }), 'kube-system', config).kind).toBe('inject');
  });

  it('defaultMode none: a pod that names no mode is left to Istio; one that opts in, and a gateway pod, are not', () => {
    const config = { ...defaultInjectionConfig, defaultMode: 'none' as const };
    const pod = (labels: Record<string, string> = {}, annotations: Record<string, string> = {}) => podOf({ name: '', labels, annotations, expected: { kind: 'skip', reason: 'host-network' } });
    expect(decide(pod(), 'shop', config)).toEqual({ kind: 'skip', reason: 'mode-none' });
    expect(decide(pod({}, { 'apisix-mesh.io/mode': 'sidecar' }), 'shop', config)).toEqual({ kind: 'inject', mode: 'sidecar' });
    expect(decide(pod({ 'app.kubernetes.io/name': 'apisix' }), 'shop', config)).toEqual({ kind: 'inject', mode: 'gateway' });
    expect(decide(pod(), 'shop', defaultInjectionConfig)).toEqual({ kind: 'inject', mode: 'sidecar' });
  });
});

describe('reviewAdmission: what reaches the decision', () => {
  const pod = podOf({ name: '', expected: { kind: 'skip', reason: 'host-network' } });

  it.each([
    ['UPDATE', { operation: 'UPDATE' }],
    ['DELETE', { operation: 'DELETE' }],
    ['CONNECT', { operation: 'CONNECT' }],
    ['a Deployment', { kind: { group: 'apps', version: 'v1', kind: 'Deployment' }, resource: { group: 'apps', version: 'v1', resource: 'deployments' } }],
    ['a subresource', { subResource: 'ephemeralcontainers' }],
    ['no operation', { operation: undefined }],
  ])('skips %s without looking at the object', (_name, change) => {
    expect(reviewAdmission({ ...podCreate(pod), ...change }, defaultInjectionConfig)).toEqual({ kind: 'skipped', reason: 'not-pod-create' });
  });

  it('takes the namespace from the request when the pod has none (controller-made pods)', () => {
    const noNs = { ...pod, metadata: { name: 'p' } };
    expect(reviewAdmission(podCreate(noNs, 'kube-system'), defaultInjectionConfig)).toEqual({ kind: 'skipped', reason: 'excluded-namespace' });
    expect(reviewAdmission(podCreate(noNs, 'shop'), defaultInjectionConfig).kind).toBe('injected');
  });

  it.each([
    ['a string', 'pod'],
    ['null', null],
    ['a list', [1, 2]],
    ['a Service', { kind: 'Service', spec: {} }],
    ['labels that are not strings', { metadata: { labels: { a: 1 } } }],
    ['containers that are not a list', { spec: { containers: {} } }],
    ['a container without a name', { spec: { containers: [{ image: 'x' }] } }],
    ['ports that are not numbers', { spec: { containers: [{ name: 'a', ports: [{ containerPort: '80' }] }] } }],
  ])('rejects a Pod CREATE whose object is %s, saying why', (_name, object) => {
    const outcome = reviewAdmission({ ...podCreate(pod), object }, defaultInjectionConfig);
    expect(outcome.kind).toBe('rejected');
    expect(outcome.kind === 'rejected' && outcome.message).toMatch(/^cannot read the pod: /);
  });

  it('never throws on a request that is not an object', () => {
    for (const request of [null, undefined, 42, 'x', [], { operation: 'CREATE', kind: null }]) {
      expect(reviewAdmission(request as never, defaultInjectionConfig)).toEqual({ kind: 'skipped', reason: 'not-pod-create' });
    }
  });
});
