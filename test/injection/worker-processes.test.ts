// APISIX's worker count per pod, as Istio decides Envoy's concurrency: the pod's ProxyConfig, then the
// mesh-wide setting, then the proxy's CPU limit rounded up; refused with the annotation's name where
// the text is not a ProxyConfig, never a silent default.
import fc from 'fast-check';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { defaultInjectionConfig, type InjectionConfig } from '../../webhook/config/injection-config.js';
import { parseInjectionConfig } from '../../webhook/config/parse-config.js';
import { injectPod } from '../../webhook/injection/inject-pod.js';
import { workerProcessesFor } from '../../webhook/injection/worker-processes.js';
import { annotatedPod } from './helpers.js';

/** `worker_processes` of the APISIX config.yaml the injected pod carries, or the refusal. */
const workersOf = (annotations: Record<string, string>, config: InjectionConfig = defaultInjectionConfig): unknown => {
  const result = injectPod(annotatedPod(annotations), 'sidecar', config);
  if (result.kind === 'rejected') return `rejected: ${result.message}`;
  return parse(result.pod.metadata!.annotations!['apisix-mesh.io/apisix-config']!).nginx_config.worker_processes;
};
const PC = 'proxy.istio.io/config';
const CPU_LIMIT = 'sidecar.istio.io/proxyCPULimit';

describe("APISIX's worker processes follow Istio's concurrency", () => {
  it('default: the configured APISIX CPU limit (2) rounded up', () => {
    expect(defaultInjectionConfig.resources.apisix.limits?.cpu).toBe('2');
    expect(workersOf({})).toBe(2);
  });

  it("the pod's CPU limit (proxyCPULimit) rounded up to whole CPUs, as the downward API gives pilot-agent ISTIO_CPU_LIMIT", () => {
    for (const [limit, workers] of [['500m', 1], ['1', 1], ['1001m', 2], ['2500m', 3], ['4', 4], ['0.1', 1], ['1e1', 10], ['200', 64]] as const) {
      expect(workersOf({ [CPU_LIMIT]: limit }), limit).toBe(workers);
    }
    // other sizing annotations without a CPU limit: no limit on the container, the fallback of 2
    expect(workersOf({ 'sidecar.istio.io/proxyMemoryLimit': '1Gi' })).toBe(2);
  });

  it("the pod's ProxyConfig concurrency wins over the CPU limit, in YAML or JSON; 0 is nginx's auto", () => {
    expect(workersOf({ [PC]: 'concurrency: 1', [CPU_LIMIT]: '4' })).toBe(1);
    expect(workersOf({ [PC]: '{"concurrency": 3}' })).toBe(3);
    expect(workersOf({ [PC]: '{"concurrency": "5"}' })).toBe(5);
    expect(workersOf({ [PC]: 'concurrency: 0' })).toBe('auto');
    // a ProxyConfig without concurrency (or with it null) leaves the decision to the CPU limit
    expect(workersOf({ [PC]: 'holdApplicationUntilProxyStarts: true', [CPU_LIMIT]: '3' })).toBe(3);
    expect(workersOf({ [PC]: 'concurrency: null', [CPU_LIMIT]: '3' })).toBe(3);
    expect(workersOf({ [PC]: '', [CPU_LIMIT]: '3' })).toBe(3);
  });

  it('a number in the configuration is the mesh-wide concurrency: over the CPU limit, under the pod', () => {
    const config = parseInjectionConfig('apisixWorkerProcesses: 1', 'c.yaml');
    expect(workersOf({ [CPU_LIMIT]: '4' }, config)).toBe(1);
    expect(workersOf({ [PC]: 'concurrency: 2' }, config)).toBe(2);
    expect(parseInjectionConfig('apisixWorkerProcesses: cpu-limit', 'c.yaml').apisixWorkerProcesses).toBe('cpu-limit');
    // a configuration without an APISIX CPU limit
    const unlimited = parseInjectionConfig('resources: {apisix: {requests: {cpu: 100m}}}', 'c.yaml');
    expect(workersOf({}, unlimited)).toBe(2);
    for (const bad of ['0', '65', 'auto', '1.5', '"2"']) {
      expect(() => parseInjectionConfig(`apisixWorkerProcesses: ${bad}`, 'c.yaml'), bad).toThrow(/apisixWorkerProcesses: must be an integer in 1-64 or cpu-limit/);
    }
  });

  it('refuses what is not a ProxyConfig or not a concurrency, naming the annotation and quoting little', () => {
    const cases: Array<[string, RegExp]> = [
      ['concurrency: [', /^rejected: annotation proxy\.istio\.io\/config: "concurrency: \[" is not a ProxyConfig in YAML or JSON/],
      ['- concurrency: 1', /is not a ProxyConfig \(a mapping of its fields/],
      ['just text', /is not a ProxyConfig \(a mapping/],
      ['a: &x 1\nb: *x', /is not a ProxyConfig in YAML or JSON \(an alias \(\*name\)\)/],
      ['concurrency: 1\nconcurrency: 2', /\(key "concurrency" twice in one mapping\)/],
      ['proxyMetadata: {A: "1", A: "2"}', /\(key "A" twice in one mapping\)/],
      ['? [a, b]\n: 1', /\(a key that is not a scalar\)/],
      ['concurrency: 1\n---\nconcurrency: 2', /multiple documents/],
      ['concurrency: -1', /concurrency -1 must be an integer in 0-64/],
      ['concurrency: 65', /concurrency 65 must be an integer in 0-64/],
      ['concurrency: 1.5', /concurrency 1\.5 must be an integer/],
      ['concurrency: "two"', /concurrency "two" must be an integer/],
      ['concurrency: {value: 2}', /concurrency "\{\\"value\\":2\}" must be an integer/],
      [`concurrency: 1\n# ${'x'.repeat(20_000)}`, /is longer than the 16384 characters a ProxyConfig may have here/],
    ];
    for (const [text, message] of cases) {
      const refusal = String(workersOf({ [PC]: text }));
      expect(refusal, text.slice(0, 40)).toMatch(message);
      expect(refusal.length, 'a short message').toBeLessThan(400);
    }
  });

  it('any annotation text: a worker count in 1-64 or auto, or a refusal (never a crash)', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 200 }), fc.integer({ min: -5, max: 100 }).map((n) => `concurrency: ${n}`)), fc.option(fc.constantFrom('100m', '3', '70')), (text, limit) => {
        const annotations: Record<string, string> = { [PC]: text, ...(limit === null ? {} : { [CPU_LIMIT]: limit }) };
        const outcome = workersOf(annotations);
        if (typeof outcome === 'string' && outcome.startsWith('rejected: ')) {
          expect(outcome).toMatch(/^rejected: annotation proxy\.istio\.io\/config: /);
        } else {
          expect(outcome === 'auto' || (Number.isInteger(outcome) && (outcome as number) >= 1 && (outcome as number) <= 64), String(outcome)).toBe(true);
        }
      }),
      { numRuns: 500 },
    );
  });

  it('is a pure function of the annotations, the configuration and the APISIX resources', () => {
    expect(workerProcessesFor({}, { apisixWorkerProcesses: 'cpu-limit' }, { limits: { cpu: '750m' } })).toBe(1);
    expect(workerProcessesFor({}, { apisixWorkerProcesses: 'cpu-limit' }, {})).toBe(2);
    expect(workerProcessesFor({ [PC]: 'concurrency: 6' }, { apisixWorkerProcesses: 3 }, { limits: { cpu: '1' } })).toBe(6);
  });

  it('pods with different worker counts get different config.yaml; the same count shares one', () => {
    const a = injectPod(annotatedPod({ [CPU_LIMIT]: '1' }), 'sidecar', defaultInjectionConfig);
    const b = injectPod(annotatedPod({ [PC]: 'concurrency: 1' }), 'sidecar', defaultInjectionConfig);
    const c = injectPod(annotatedPod({}), 'sidecar', defaultInjectionConfig);
    const config = (r: typeof a): string => (r.kind === 'injected' ? r.pod.metadata!.annotations!['apisix-mesh.io/apisix-config']! : r.message);
    expect(config(a)).toBe(config(b));
    expect(config(a)).not.toBe(config(c));
    expect(config(a).replace('worker_processes: 1', 'worker_processes: 2')).toBe(config(c));
  });
});
