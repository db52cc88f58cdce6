// App probes on the real pod (real capture rules, real APISIX): the kubelet's probes of the app go to
// the agent's status port, which runs the original probe against the app from outside the capture.
// Without the rewrite a tcpSocket probe reaches APISIX's inbound listener, which accepts the
// connection whether the app listens or not: the probe passed with the app down.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingForPod, podManifest } from '../support/pod/requirements.js';
import { startPod, type RunningPod } from '../support/pod/pod-harness.js';
import { describeLines } from '../support/pod/apisix-log.js';
import { loadCanonical } from '../support/xds-fixtures.js';

const APP_PORT = 8080;

function manifest() {
  const m = podManifest('probed', 'shop', { app: 'probed' }, [{ name: 'app', ports: [APP_PORT] }]);
  Object.assign(m.spec.containers[0]!, {
    readinessProbe: { tcpSocket: { port: APP_PORT }, timeoutSeconds: 1 },
    livenessProbe: { httpGet: { path: '/healthz', port: APP_PORT }, timeoutSeconds: 1 },
  });
  return m;
}

describeWhenAvailable('app probes run by the agent (real APISIX, real capture)', missingForPod(), () => {
  let pod: RunningPod;
  beforeAll(async () => {
    pod = await startPod({ manifest: manifest(), xds: loadCanonical('synthetic-canary-xds-responses.json') });
  }, 60_000);
  afterAll(async () => {
    await pod?.stop();
  });

  const probes = async () => ({ readiness: await pod.kubelet.probeOnce('app', 'readiness'), liveness: await pod.kubelet.probeOnce('app', 'liveness') });

  it('the probes are the agent\'s: httpGet on the status port', () => {
    const app = pod.injected.spec!.containers.find((c) => c.name === 'app')!;
    expect(app.readinessProbe?.httpGet).toEqual({ path: '/app-health/app/readyz', port: 15020, scheme: 'HTTP' });
    expect(app.livenessProbe?.httpGet).toEqual({ path: '/app-health/app/livez', port: 15020, scheme: 'HTTP' });
  });

  it('the app down: the tcpSocket and httpGet probes fail (APISIX listening on the capture port does not count)', async () => {
    // the mesh is ready (the agent answers on its status port, APISIX on the capture ports)
    const meshReady = async () => (await pod.kubelet.probeOnce('apisix-mesh-agent', 'readiness')) && (await pod.kubelet.probeOnce('apisix-mesh-apisix', 'readiness'));
    await expect.poll(meshReady, { timeout: 30_000 }).toBe(true);
    expect(await probes()).toEqual({ readiness: false, liveness: false });
    expect(pod.apisixErrors(), describeLines(pod.apisixErrors())).toEqual([]);
  }, 60_000);

  it('the app up: both pass, the app probed directly from 127.0.0.6', async () => {
    await pod.app().serve('app', '0.0.0.0', APP_PORT);
    await expect.poll(probes, { timeout: 10_000 }).toEqual({ readiness: true, liveness: true });
    const seen = (await pod.app().served('app')).requests.filter((r) => r.url === '/healthz');
    expect(seen.length).toBeGreaterThanOrEqual(1);
    expect(seen.at(-1)!.peer).toBe('127.0.0.6');
    expect(pod.apisixErrors(), describeLines(pod.apisixErrors())).toEqual([]);
  });

  it('the app down again: both fail again', async () => {
    await pod.app().close('app');
    await expect.poll(probes, { timeout: 10_000 }).toEqual({ readiness: false, liveness: false });
    expect(pod.apisixErrors(), describeLines(pod.apisixErrors())).toEqual([]);
  });
});
