// App probes rewritten as Istio's injector does, through the injection's own entry point
// (injectPod): what the agent gets, what comes back when the sidecar goes or the pod opts out,
// re-injection, and the refusals (fail closed, quoted short).
import type { V1Container, V1Pod } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { APP_PROBERS_ENV, parseAppProbers } from '../../agent/app-probes/app-probers.js';
import { defaultInjectionConfig, type InjectionConfig } from '../../webhook/config/injection-config.js';
import { injectPod } from '../../webhook/injection/inject-pod.js';

const APP: V1Container = {
  name: 'app',
  image: 'app:1',
  ports: [{ name: 'http', containerPort: 8080 }],
  readinessProbe: { httpGet: { path: '/ready', port: 'http' }, periodSeconds: 3 },
  livenessProbe: { tcpSocket: { port: 8080 }, timeoutSeconds: 4 },
  startupProbe: { exec: { command: ['true'] } },
};

function pod(containers: V1Container[] = [APP], annotations: Record<string, string> = {}): V1Pod {
  return { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p', namespace: 'shop', annotations }, spec: { containers } };
}

function inject(p: V1Pod, mode: 'sidecar' | 'none' | 'gateway' = 'sidecar', config: InjectionConfig = defaultInjectionConfig): V1Pod {
  const r = injectPod(p, mode, config);
  if (r.kind !== 'injected') throw new Error(r.message);
  return r.pod;
}

function rejection(p: V1Pod, mode: 'sidecar' | 'none' = 'sidecar'): string {
  const r = injectPod(p, mode, defaultInjectionConfig);
  return r.kind === 'rejected' ? r.message : '';
}

const container = (p: V1Pod, name: string) => [...(p.spec!.initContainers ?? []), ...p.spec!.containers].find((c) => c.name === name)!;
const probersOf = (p: V1Pod) => parseAppProbers(container(p, 'apisix-mesh-agent').env?.find((e) => e.name === APP_PROBERS_ENV)?.value);

describe('app probe rewriting', () => {
  it('httpGet and tcpSocket go to the agent (named port resolved, timeouts kept); exec stays', () => {
    const out = inject(pod());
    const app = container(out, 'app');
    expect(app.readinessProbe).toEqual({ httpGet: { path: '/app-health/app/readyz', port: 15020, scheme: 'HTTP' }, periodSeconds: 3 });
    expect(app.livenessProbe).toEqual({ httpGet: { path: '/app-health/app/livez', port: 15020, scheme: 'HTTP' }, timeoutSeconds: 4 });
    expect(app.startupProbe).toEqual(APP.startupProbe);
    expect(Object.fromEntries(probersOf(out))).toEqual({
      '/app-health/app/readyz': { httpGet: { port: 8080, path: '/ready' }, timeoutSeconds: 1 },
      '/app-health/app/livez': { tcpSocket: { port: 8080 }, timeoutSeconds: 4 },
    });
  });

  it('re-injection rewrites from the originals: the same pod, not a probe of the status port', () => {
    const once = inject(pod());
    expect(inject(structuredClone(once))).toEqual(once);
  });

  it('opting out after an injection gives the app its own probes back (ports as numbers)', () => {
    const once = inject(pod());
    once.metadata!.annotations!['sidecar.istio.io/rewriteAppHTTPProbers'] = 'false';
    const out = inject(once);
    expect(container(out, 'app').readinessProbe).toEqual({ httpGet: { port: 8080, path: '/ready' }, periodSeconds: 3 });
    expect(container(out, 'app').livenessProbe).toEqual({ tcpSocket: { port: 8080 }, timeoutSeconds: 4 });
    expect(probersOf(out).size).toBe(0);
  });

  it.each(['none', 'gateway'] as const)('switching to %s mode gives the app its own probes back', (mode) => {
    const out = inject(inject(pod()), mode);
    expect(container(out, 'app').readinessProbe).toEqual({ httpGet: { port: 8080, path: '/ready' }, periodSeconds: 3 });
    expect(container(out, 'app').livenessProbe).toEqual({ tcpSocket: { port: 8080 }, timeoutSeconds: 4 });
  });

  it('an annotation that is not a boolean leaves the configuration\'s choice (as Istio)', () => {
    expect(probersOf(inject(pod([APP], { 'sidecar.istio.io/rewriteAppHTTPProbers': 'no' }))).size).toBe(2);
    expect(probersOf(inject(pod([APP], { 'sidecar.istio.io/rewriteAppHTTPProbers': 'FALSE' }))).size).toBe(0);
  });

  it('classic sidecars: an app init container with restartPolicy Always keeps its probes (it starts before the agent)', () => {
    const p = pod();
    p.spec!.initContainers = [{ name: 'side', image: 's:1', restartPolicy: 'Always', startupProbe: { tcpSocket: { port: 7000 } } }];
    const out = inject(p);
    expect(container(out, 'side').startupProbe).toEqual({ tcpSocket: { port: 7000 } });
    expect([...probersOf(out).keys()]).not.toContain('/app-health/side/startupz');
  });

  it('refuses a probe the agent could not run faithfully, and too many probes, quoting short and naming the opt-out', () => {
    const badPath = rejection(pod([{ name: 'app', image: 'a', readinessProbe: { httpGet: { path: `/a b${'x'.repeat(500)}`, port: 80 } } }]));
    expect(badPath).toMatch(/container "app" readinessProbe\.httpGet\.path: .*printable ASCII/);
    expect(badPath).toMatch(/rewriteAppHTTPProbers: "false"/);
    expect(badPath.length).toBeLessThan(400);
    const many = Array.from({ length: 33 }, (_, i): V1Container => ({
      name: `c${i}`,
      image: 'a',
      readinessProbe: { tcpSocket: { port: 80 } },
      livenessProbe: { tcpSocket: { port: 80 } },
      startupProbe: { tcpSocket: { port: 80 } },
    }));
    expect(rejection(pod(many))).toMatch(/99 probes to rewrite, more than the 96/);
  });

  it('refuses a pod whose earlier injection left probers that do not read back (tampered)', () => {
    const once = inject(pod());
    const env = container(once, 'apisix-mesh-agent').env!.find((e) => e.name === APP_PROBERS_ENV)!;
    env.value = JSON.stringify({ '/app-health/app/readyz': { httpGet: { port: 80, host: 'evil.example' } } });
    expect(rejection(once)).toMatch(/earlier injection's app probes cannot be read back: .*unknown field "host"/);
    expect(rejection(once, 'none')).toMatch(/cannot be read back/);
  });
});
