/**
 * Property tests (fast-check): for random pods, the patch from the webhook path applies to the
 * submitted pod and gives exactly the injected pod, the result validates against the Kubernetes
 * schema, and submitting the result again needs no patch. Plus: the diff is a correct JSON Patch for
 * any two JSON values, and `reviewAdmission` answers any JSON without throwing.
 */
import type { V1Container, V1Pod } from '@kubernetes/client-node';
import fc from 'fast-check';
import fjp from 'fast-json-patch';
import { describe, expect, it } from 'vitest';
import { defaultInjectionConfig, type InjectionConfig } from '../../webhook/config/injection-config.js';
import { injectPod } from '../../webhook/injection/inject-pod.js';
import { diff } from '../../webhook/injection/patch.js';
import { serializePatch } from '../../webhook/injection/patch-json.js';
import { reviewAdmission } from '../../webhook/injection/review.js';
import { podCreate, withApiServerDefaults } from './helpers.js';
import { validatePod } from './kubernetes-schema.js';
import { reservedPorts } from '../../webhook/injection/capture.js';

// every port the sidecar reserves (its loopback listeners too): an app declaring one is refused
const RESERVED = reservedPorts(defaultInjectionConfig);
const dnsName = fc.stringMatching(/^[a-z]([a-z0-9-]{0,10}[a-z0-9])?$/).filter((n) => !n.startsWith('apisix-mesh'));
const port = fc.integer({ min: 1, max: 65535 }).filter((p) => !RESERVED.includes(p));
const labelKey = fc.oneof(dnsName, fc.tuple(dnsName, dnsName).map(([a, b]) => `${a}.io/${b}`), fc.constantFrom('odd~key/with.slash', 'toString', 'constructor'));

const probe = fc.oneof(
  fc.record({ httpGet: fc.record({ path: fc.constant('/healthz'), port: fc.oneof(port, fc.constant('http')) }) }),
  fc.record({ tcpSocket: fc.record({ port }) }),
  fc.record({ exec: fc.record({ command: fc.constant(['true']).map((c) => [...c]) }) }),
);

const container = (name: string): fc.Arbitrary<V1Container> =>
  fc.record(
    {
      name: fc.constant(name),
      image: fc.constantFrom('app:1', 'registry.example.com/team/app@sha256:' + 'a'.repeat(64)),
      ports: fc.uniqueArray(port, { maxLength: 3 }).map((ps) => ps.map((containerPort, i) => ({ containerPort, ...(i === 0 ? { name: 'http' } : {}) }))),
      readinessProbe: probe,
      env: fc.array(fc.record({ name: fc.constantFrom('A', 'B_C', 'LOG'), value: fc.string({ maxLength: 8 }) }), { maxLength: 2 }),
    },
    { requiredKeys: ['name', 'image'] },
  );

const trafficAnnotations = fc.record(
  {
    'traffic.sidecar.istio.io/includeInboundPorts': fc.oneof(fc.constant('*'), fc.constant(''), fc.uniqueArray(port, { minLength: 1, maxLength: 3 }).map((p) => p.join(','))),
    'traffic.sidecar.istio.io/excludeInboundPorts': fc.uniqueArray(port, { maxLength: 3 }).map((p) => p.join(',')),
    'traffic.sidecar.istio.io/includeOutboundIPRanges': fc.constantFrom('*', '', '10.0.0.0/8', '10.0.0.0/8,fd00::/8'),
    'traffic.sidecar.istio.io/excludeOutboundIPRanges': fc.constantFrom('', '169.254.169.254/32', '10.96.0.0/12,192.168.0.0/16'),
    'traffic.sidecar.istio.io/excludeOutboundPorts': fc.uniqueArray(port, { maxLength: 3 }).map((p) => p.join(',')),
    'sidecar.istio.io/nativeSidecar': fc.constantFrom('true', 'false'),
    'sidecar.istio.io/interceptionMode': fc.constantFrom('REDIRECT', 'NONE'),
    'apisix-mesh.io/mode': fc.constantFrom('sidecar', 'gateway'),
    'apisix-mesh.io/gateway-inbound-ports': fc.uniqueArray(port, { minLength: 1, maxLength: 3 }).map((p) => p.join(',')),
  },
  { requiredKeys: [] },
);

const podArb: fc.Arbitrary<V1Pod> = fc
  .record({
    names: fc.uniqueArray(dnsName, { minLength: 1, maxLength: 5 }),
    initCount: fc.nat({ max: 2 }),
    labels: fc.option(fc.dictionary(labelKey, dnsName, { maxKeys: 3 }), { nil: undefined }),
    annotations: fc.option(fc.tuple(fc.dictionary(labelKey, fc.string({ maxLength: 10 }), { maxKeys: 2 }), trafficAnnotations).map(([a, b]) => ({ ...a, ...b })), { nil: undefined }),
    volumes: fc.uniqueArray(dnsName, { maxLength: 2 }),
    serviceAccountName: fc.option(dnsName, { nil: undefined }),
  })
  .chain(({ names, initCount, labels, annotations, volumes, serviceAccountName }) => {
    const inits = names.slice(0, Math.min(initCount, names.length - 1));
    const apps = names.slice(inits.length);
    return fc.record({ inits: fc.tuple(...inits.map(container)), apps: fc.tuple(...apps.map(container)) }).map(({ inits: i, apps: a }) => {
      const spec: V1Pod['spec'] = { containers: a };
      if (i.length > 0) spec.initContainers = i;
      if (volumes.length > 0) spec.volumes = volumes.map((name) => ({ name, emptyDir: {} }));
      if (serviceAccountName) spec.serviceAccountName = serviceAccountName;
      const metadata: V1Pod['metadata'] = { name: 'random', namespace: 'shop' };
      if (labels) metadata.labels = labels;
      if (annotations) metadata.annotations = annotations;
      return { apiVersion: 'v1', kind: 'Pod', metadata, spec } as V1Pod;
    });
  });

const configArb: fc.Arbitrary<InjectionConfig> = fc
  .record({ nativeSidecars: fc.boolean(), inboundCapture: fc.constantFrom('all' as const, 'declared' as const) })
  .map((o) => ({ ...defaultInjectionConfig, ...o }));

describe('properties of the injection', () => {
  it('the patch turns the pod into the injected pod, which validates and needs no second patch', () => {
    fc.assert(
      fc.property(podArb, configArb, (pod, config) => {
        const before = structuredClone(pod);
        const outcome = reviewAdmission(podCreate(pod, 'shop'), config);
        expect(pod).toEqual(before); // the submitted pod is not modified
        if (outcome.kind !== 'injected') throw new Error(`not injected: ${JSON.stringify(outcome)}`);
        const expected = injectPod(pod, outcome.mode, config);
        if (expected.kind !== 'injected') throw new Error('injectPod disagrees with reviewAdmission');
        const text = serializePatch(outcome.patch);
        expect(text).toBe(JSON.stringify(outcome.patch)); // twice: the second comes from the cache
        expect(serializePatch(outcome.patch)).toBe(text);
        const patched = fjp.applyPatch(structuredClone(pod), JSON.parse(text), true).newDocument;
        expect(patched).toEqual(JSON.parse(JSON.stringify(expected.pod)));
        validatePod(patched);
        const again = reviewAdmission(podCreate(patched, 'shop'), config);
        expect(again).toEqual({ kind: 'injected', mode: outcome.mode, patch: [] });
        // As the API server re-invokes the webhook: defaults filled in, still nothing to change.
        const defaulted = withApiServerDefaults(patched);
        expect(reviewAdmission(podCreate(defaulted, 'shop'), config)).toEqual({ kind: 'injected', mode: outcome.mode, patch: [] });
      }),
      { numRuns: 300 },
    );
  });

  it('diff(a, b) applied to a gives b, for any JSON values', () => {
    const json = fc.jsonValue().map((v) => JSON.parse(JSON.stringify(v)) as unknown).filter((v) => !JSON.stringify(v).includes('__proto__'));
    fc.assert(
      fc.property(json, json, (a, b) => {
        const result = fjp.applyPatch(structuredClone(a), structuredClone(diff(a, b)), true).newDocument;
        expect(result).toEqual(b);
        expect(diff(a, structuredClone(a))).toEqual([]);
      }),
      { numRuns: 500 },
    );
  });

  it('diff only looks at own properties (found by the property above)', () => {
    expect(diff({ toString: 0 }, {})).toEqual([{ op: 'remove', path: '/toString' }]);
    expect(diff({}, { constructor: 'x' })).toEqual([{ op: 'add', path: '/constructor', value: 'x' }]);
  });

  it('diff of a list with insertions is only adds', () => {
    fc.assert(
      fc.property(fc.array(fc.integer(), { maxLength: 6 }), fc.array(fc.tuple(fc.nat(), fc.string()), { maxLength: 3 }), (list, inserts) => {
        const after: unknown[] = [...list];
        for (const [at, value] of inserts) after.splice(at % (after.length + 1), 0, `inserted:${value}`);
        const ops = diff({ list }, { list: after });
        expect(ops.every((op) => op.op === 'add')).toBe(true);
        expect(ops).toHaveLength(inserts.length);
        expect(fjp.applyPatch({ list: [...list] }, ops).newDocument).toEqual({ list: after });
      }),
    );
  });

  it('reviewAdmission answers any JSON without throwing', () => {
    const anyRequest = fc.oneof(
      fc.anything(),
      fc.record({ operation: fc.constantFrom('CREATE', 'UPDATE'), kind: fc.anything(), resource: fc.anything(), object: fc.anything(), namespace: fc.anything() }),
      fc.anything().map((object) => podCreate(object, 'shop')),
      fc.record({ metadata: fc.anything(), spec: fc.anything() }).map((object) => podCreate(object, 'shop')),
      fc
        .record({ containers: fc.anything(), initContainers: fc.anything(), volumes: fc.anything(), hostNetwork: fc.anything() }, { requiredKeys: [] })
        .map((spec) => podCreate({ metadata: { annotations: { 'apisix-mesh.io/mode': 'sidecar' } }, spec }, 'shop')),
    );
    fc.assert(
      fc.property(anyRequest, (request) => {
        const outcome = reviewAdmission(request as never, defaultInjectionConfig);
        expect(['injected', 'skipped', 'rejected']).toContain(outcome.kind);
        if (outcome.kind === 'rejected') expect(outcome.message).not.toMatch(/^internal error/);
      }),
      { numRuns: 2000 },
    );
  });
});
