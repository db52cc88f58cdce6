// Issue 14, "Istio-compatible metadata": the pod's prometheus.io/* annotations point at one merged
// endpoint, as Istio's 15020 does. On the real APISIX of the pod harness: Prometheus (from the
// cluster side, on the pod IP) scrapes the agent's /stats/prometheus and gets the agent's metrics,
// the real APISIX export and the app's own metrics from the annotations the injection moved aside.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingForPod, podManifest } from '../support/pod/requirements.js';
import { startPod, type RunningPod } from '../support/pod/pod-harness.js';
import { POD_IP } from '../support/pod/network.js';
import { describeLines } from '../support/pod/apisix-log.js';
import { loadCanonical } from '../support/xds-fixtures.js';

const APP_METRICS_PORT = 9102;

function manifest() {
  const m = podManifest('frontend', 'shop', { app: 'frontend', version: 'v1' }, [{ name: 'app', ports: [8080, APP_METRICS_PORT] }]);
  return { ...m, metadata: { ...m.metadata, annotations: { 'prometheus.io/scrape': 'true', 'prometheus.io/port': String(APP_METRICS_PORT), 'prometheus.io/path': '/manage/prometheus' } } };
}

describeWhenAvailable('one merged Prometheus endpoint per pod (real APISIX, real kernel)', missingForPod(), () => {
  let pod: RunningPod;
  beforeAll(async () => {
    pod = await startPod({ manifest: manifest(), xds: loadCanonical('synthetic-canary-xds-responses.json') });
    await pod.kubelet.waitReady(30_000);
    await pod.app().serve('app-metrics', '0.0.0.0', APP_METRICS_PORT);
  }, 60_000);
  afterAll(async () => {
    await pod?.stop();
  });

  it('the pod\'s annotations point Prometheus at the agent\'s 15020/stats/prometheus, with the app\'s moved aside', () => {
    const annotations = pod.injected.metadata!.annotations!;
    expect(annotations['prometheus.io/port']).toBe('15020');
    expect(annotations['prometheus.io/path']).toBe('/stats/prometheus');
    expect(annotations['prometheus.io/scrape']).toBe('true');
    const agent = pod.injected.spec!.containers.find((c) => c.name === 'apisix-mesh-agent')!;
    expect(JSON.parse(agent.env!.find((e) => e.name === 'ISTIO_PROMETHEUS_ANNOTATIONS')!.value!)).toEqual({
      scrape: 'true',
      path: '/manage/prometheus',
      port: String(APP_METRICS_PORT),
    });
  });

  it('a scrape of that endpoint from outside the pod returns the agent\'s, APISIX\'s and the app\'s metrics', async () => {
    const res = await pod.cluster.http({ url: `http://${POD_IP}:15020/stats/prometheus`, headers: { 'X-Prometheus-Scrape-Timeout-Seconds': '5' } });
    if (!('status' in res)) throw new Error(res.error);
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toBe('text/plain; version=0.0.4; charset=utf-8');
    const body = res.body;
    const agentAt = body.indexOf('apisix_mesh_xds_connected 1');
    // APISIX's own export (nginx-lua-prometheus): what it holds from the agent's etcd API
    const apisixAt = body.search(/^apisix_etcd_modify_indexes\{key="max_modify_index"\} \d+$/m);
    const appAt = body.indexOf('"name":"app-metrics"');
    expect(agentAt, body.slice(0, 400)).toBeGreaterThanOrEqual(0);
    expect(apisixAt).toBeGreaterThan(agentAt);
    expect(appAt).toBeGreaterThan(apisixAt);
    expect(body).not.toContain('# apisix-mesh:');
    // the app was asked on loopback by the agent (uid 1337: never captured), at the moved path
    const served = await pod.app().served('app-metrics');
    expect(served.requests.map((r) => [r.url, r.peer])).toContainEqual(['/manage/prometheus', '127.0.0.1']);
    expect(pod.apisixErrors(), describeLines(pod.apisixErrors())).toEqual([]);
  });
});
