// Istio's telemetry metadata on sidecar pods: the Prometheus metrics merge (annotations pointing at
// the agent's merged endpoint, the app's own moved into ISTIO_PROMETHEUS_ANNOTATIONS, as Istio's
// applyPrometheusMerge does) and the canonical-service labels (as Istio's sidecar template derives
// them). Through injectPod and the admission review, as the webhook runs them.
import type { V1Container, V1Pod } from '@kubernetes/client-node';
import { applyPatch } from 'fast-json-patch';
import { describe, expect, it } from 'vitest';
import { defaultInjectionConfig, type InjectionConfig } from '../../webhook/config/injection-config.js';
import { parseInjectionConfig } from '../../webhook/config/parse-config.js';
import { injectPod } from '../../webhook/injection/inject-pod.js';
import { reviewAdmission } from '../../webhook/injection/review.js';
import { canonicalServiceLabels, workloadName } from '../../webhook/injection/telemetry-metadata.js';
import { podCreate } from './helpers.js';

function pod(annotations: Record<string, string>, labels: Record<string, string> = { app: 'web' }, meta: Partial<NonNullable<V1Pod['metadata']>> = {}): V1Pod {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'web-1', namespace: 'shop', labels, annotations, ...meta },
    spec: { containers: [{ name: 'web', image: 'nginx', ports: [{ containerPort: 8080 }] }] },
  };
}

function inject(p: V1Pod, config: InjectionConfig = defaultInjectionConfig, mode: 'sidecar' | 'none' | 'gateway' = 'sidecar'): V1Pod {
  const r = injectPod(p, mode, config);
  if (r.kind !== 'injected') throw new Error(r.message);
  return r.pod;
}

function rejection(p: V1Pod): string {
  const r = injectPod(p, 'sidecar', defaultInjectionConfig);
  if (r.kind !== 'rejected') throw new Error('expected a rejection');
  return r.message;
}

const agentOf = (p: V1Pod): V1Container => [...(p.spec!.initContainers ?? []), ...p.spec!.containers].find((c) => c.name === 'apisix-mesh-agent')!;
const scrapeEnv = (p: V1Pod) => agentOf(p).env?.find((e) => e.name === 'ISTIO_PROMETHEUS_ANNOTATIONS')?.value;
const promAnnotations = (p: V1Pod) =>
  Object.fromEntries(Object.entries(p.metadata!.annotations ?? {}).filter(([k]) => /prometheus/.test(k)));

const MERGED = { 'prometheus.io/port': '15020', 'prometheus.io/path': '/stats/prometheus', 'prometheus.io/scrape': 'true' };

describe('Prometheus metrics merge', () => {
  it('points a pod without prometheus annotations at the merged endpoint, with nothing for the agent to scrape from the app', () => {
    const out = inject(pod({}));
    expect(promAnnotations(out)).toEqual(MERGED);
    expect(scrapeEnv(out)).toBeUndefined();
  });

  it('moves the app\'s annotations, every spelling Prometheus reads, into the agent\'s ISTIO_PROMETHEUS_ANNOTATIONS', () => {
    const out = inject(pod({ 'prometheus.io/scrape': 'true', 'prometheus.io.port': '8383', 'prometheus-io/path': '/manage/prometheus', team: 'a' }));
    expect(promAnnotations(out)).toEqual(MERGED);
    expect(out.metadata!.annotations!.team).toBe('a');
    expect(JSON.parse(scrapeEnv(out)!)).toEqual({ scrape: 'true', path: '/manage/prometheus', port: '8383' });
    // native sidecars: the agent is an init container and gets it too
    const native = inject(pod({ 'prometheus.io/port': '9102', 'sidecar.istio.io/nativeSidecar': 'true' }));
    expect(JSON.parse(scrapeEnv(native)!)).toEqual({ scrape: '', path: '', port: '9102' });
  });

  it('leaves the pod\'s own settings alone with merge-metrics "false", scrape "false", or the mesh-wide switch off', () => {
    const own = { 'prometheus.io/scrape': 'true', 'prometheus.io/port': '9102' };
    for (const [p, config] of [
      [pod({ ...own, 'prometheus.istio.io/merge-metrics': 'false' }), defaultInjectionConfig],
      [pod({ 'prometheus.io/scrape': 'false', 'prometheus.io/port': '9102' }), defaultInjectionConfig],
      [pod({ 'prometheus.io/scrape': 'False' }), defaultInjectionConfig],
      [pod(own), parseInjectionConfig('enablePrometheusMerge: false\n', 'c.yaml')],
    ] as const) {
      const out = inject(p, config);
      expect(promAnnotations(out)).toEqual(promAnnotations(p));
      expect(scrapeEnv(out)).toBeUndefined();
    }
    // and "true" on the pod wins over the switch
    const on = inject(pod({ ...own, 'prometheus.istio.io/merge-metrics': 'true' }), parseInjectionConfig('enablePrometheusMerge: false\n', 'c.yaml'));
    expect(promAnnotations(on)).toEqual({ ...MERGED, 'prometheus.istio.io/merge-metrics': 'true' });
  });

  it('refuses values it cannot honour, naming the annotation', () => {
    expect(rejection(pod({ 'prometheus.istio.io/merge-metrics': 'nope' }))).toMatch(/prometheus\.istio\.io\/merge-metrics: "nope"/);
    expect(rejection(pod({ 'prometheus.io/port': 'http' }))).toMatch(/prometheus\.io\/port: "http" is not a port number/);
    expect(rejection(pod({ 'prometheus.io/port': '15090' }))).toMatch(/15090 is a port of the apisix-mesh sidecar/);
  });

  it('re-injection keeps the app\'s moved settings (Istio would lose them), through the admission review too', () => {
    const once = inject(pod({ 'prometheus.io/port': '9102', 'prometheus.io/path': '/m' }));
    const twice = inject(structuredClone(once));
    expect(twice).toEqual(once);
    const review = reviewAdmission(podCreate(structuredClone(once), 'shop'), defaultInjectionConfig);
    if (review.kind !== 'injected') throw new Error(review.kind);
    expect(review.patch).toEqual([]);
    expect(applyPatch(structuredClone(once), review.patch).newDocument).toEqual(once);
  });

  it('switching to mode none or gateway puts the app\'s own annotations back', () => {
    const original = { 'prometheus.io/scrape': 'true', 'prometheus.io/port': '9102', 'prometheus.io/path': '/m' };
    const injected = inject(pod(original));
    for (const mode of ['none', 'gateway'] as const) {
      const out = inject(structuredClone(injected), defaultInjectionConfig, mode);
      expect(promAnnotations(out)).toEqual(original);
    }
    // a pod that had none gets none back
    expect(promAnnotations(inject(inject(pod({})), defaultInjectionConfig, 'none'))).toEqual({});
  });
});

describe('canonical service labels, derived as Istio\'s sidecar template does', () => {
  const rsPod = (labels: Record<string, string>) =>
    pod({}, labels, {
      name: undefined,
      generateName: 'reviews-v1-5f7b9c8d4-',
      ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: 'reviews-v1-5f7b9c8d4', uid: 'u', controller: true }],
    });

  it('takes the labels themselves, then app.kubernetes.io/*, then app/version, then the workload and "latest"', () => {
    expect(canonicalServiceLabels(rsPod({ 'service.istio.io/canonical-name': 'c', 'app.kubernetes.io/name': 'k', app: 'a', 'service.istio.io/canonical-revision': 'r', version: 'v' }))).toEqual({
      'service.istio.io/canonical-name': 'c',
      'service.istio.io/canonical-revision': 'r',
    });
    expect(canonicalServiceLabels(rsPod({ 'app.kubernetes.io/name': 'k', app: 'a', 'app.kubernetes.io/version': '2', version: 'v' }))).toEqual({
      'service.istio.io/canonical-name': 'k',
      'service.istio.io/canonical-revision': '2',
    });
    expect(canonicalServiceLabels(rsPod({ app: 'a', version: 'v1' }))).toEqual({ 'service.istio.io/canonical-name': 'a', 'service.istio.io/canonical-revision': 'v1' });
    // an empty label counts as absent (Go templates' `default`)
    expect(canonicalServiceLabels(rsPod({ app: '', 'pod-template-hash': '5f7b9c8d4' }))).toEqual({
      'service.istio.io/canonical-name': 'reviews-v1',
      'service.istio.io/canonical-revision': 'latest',
    });
  });

  it('guesses the workload from the controller as Istio does: Deployment, CronJob, DeploymentConfig, bare pod', () => {
    const owned = (kind: string, name: string, labels: Record<string, string> = {}) =>
      pod({}, labels, { name: undefined, generateName: `${name}-`, ownerReferences: [{ apiVersion: 'v1', kind, name, uid: 'u', controller: true }] });
    expect(workloadName(rsPod({ 'pod-template-hash': '5f7b9c8d4' }))).toBe('reviews-v1');
    expect(workloadName(rsPod({}))).toBe('reviews-v1-5f7b9c8d4'); // no hash label: the ReplicaSet
    expect(workloadName(owned('Job', 'backup-28912345'))).toBe('backup');
    expect(workloadName(owned('Job', 'migrate'))).toBe('migrate');
    expect(workloadName(owned('ReplicationController', 'shop-3', { deploymentconfig: 'shop' }))).toBe('shop');
    expect(workloadName(owned('StatefulSet', 'db'))).toBe('db');
    expect(workloadName(pod({}, {}))).toBe('web-1');
    // no controller: Istio's name would be empty; the generateName stands in
    expect(workloadName(pod({}, {}, { name: undefined, generateName: 'loose-' }))).toBe('loose');
  });

  it('refuses, with the reason, the shapes the derivation cannot read (found with random pods), never an internal error', () => {
    const review = (metadata: Record<string, unknown>, spec: Record<string, unknown> = { containers: [{ name: 'a' }] }) =>
      reviewAdmission(podCreate({ metadata: { ...metadata, annotations: { 'apisix-mesh.io/mode': 'sidecar', ...(metadata.annotations as object) } }, spec }, 'shop') as never, defaultInjectionConfig);
    const previous = { 'apisix-mesh.io/status': '{"initContainers":[],"containers":["apisix-mesh-agent"],"volumes":[]}' };
    for (const [outcome, message] of [
      [review({ generateName: 'a-', ownerReferences: 'x' }), 'metadata.ownerReferences is not a list of references'],
      [review({ generateName: 'a-', ownerReferences: [null] }), 'metadata.ownerReferences is not a list of references'],
      [review({ generateName: 'a-', ownerReferences: [{ controller: true, name: 7, kind: 'ReplicaSet' }] }), 'metadata.ownerReferences is not a list of references'],
      [review({ name: 7 }), 'metadata.name is not a string'],
      [review({ generateName: ['x'] }), 'metadata.generateName is not a string'],
      [review({ annotations: previous }, { containers: [{ name: 'apisix-mesh-agent', env: 'zz' }, { name: 'a' }] }), 'spec.containers[0].env is not a list of variables'],
      [review({ annotations: previous }, { containers: [{ name: 'apisix-mesh-agent', env: [{ name: 'ISTIO_PROMETHEUS_ANNOTATIONS', value: 5 }] }, { name: 'a' }] }), 'spec.containers[0].env is not a list of variables'],
    ] as const) {
      expect(outcome).toEqual({ kind: 'rejected', message: `cannot read the pod: ${message}` });
    }
  });

  it('labels injected pods with them, cutting a long workload name to a valid label value', () => {
    const long = `${'a'.repeat(62)}-b-c`;
    const out = inject(pod({}, {}, { name: long }));
    expect(out.metadata!.labels!['service.istio.io/canonical-name']).toBe('a'.repeat(62));
    expect(out.metadata!.labels!['service.istio.io/canonical-revision']).toBe('latest');
    expect(out.metadata!.annotations!['kubectl.kubernetes.io/default-logs-container']).toBe('web');
  });
});
