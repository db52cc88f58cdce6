// APISIX's worker count follows Istio's concurrency (webhook/injection/worker-processes.ts): the pod's
// ProxyConfig, else the proxy's CPU limit rounded up. On the pod harness with the real APISIX: the
// injected config.yaml is what runs (nginx's worker processes, each saying it started), and the pod
// routes. One worker is Istio's `concurrency: 1`, the usual way to make a sidecar smaller.
import { cpus } from 'node:os';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingForPod } from '../support/pod/requirements.js';
import type { RunningPod } from '../support/pod/pod-harness.js';
import { startOneServicePod } from '../support/pod/one-service-pod.js';
import { apisixProcesses } from '../support/pod/apisix-processes.js';
import { describeLines } from '../support/pod/apisix-log.js';
import { send } from '../support/echo-requests.js';
import { fqdn } from '../support/istio-xds.js';

const NS = 'shop';
const REVIEWS = { vip: '10.96.44.1', endpoint: '10.244.44.1', port: 9080, host: fqdn('reviews', NS) };

/** the ids of the workers that started (each stream worker logs it once: stream_without_upstreams.lua) */
const startedWorkers = (pod: RunningPod): number[] =>
  [...new Set([...pod.apisixLog().matchAll(/apisix-mesh: stream worker (\d+) holds none of APISIX's upstreams/g)].map((m) => Number(m[1])))].sort();

for (const [what, annotations, workers] of [
  ["ProxyConfig's concurrency: 1", { 'proxy.istio.io/config': 'concurrency: 1\n', 'sidecar.istio.io/proxyCPULimit': '4' }, 1],
  ['a CPU limit of 2.5 CPUs', { 'sidecar.istio.io/proxyCPULimit': '2500m' }, 3],
  // Istio's "one per CPU of the node": nginx's worker_processes auto
  ["ProxyConfig's concurrency: 0", { 'proxy.istio.io/config': 'concurrency: 0\n' }, cpus().length],
] as const) {
  describeWhenAvailable(`APISIX's workers from ${what} (real APISIX)`, missingForPod(), () => {
    let pod: RunningPod;
    beforeAll(async () => {
      pod = await startOneServicePod({ pod: 'workers', namespace: NS, service: REVIEWS, name: 'reviews', annotations });
    }, 120_000);
    afterAll(async () => {
      await pod?.stop();
    });

    it(`runs ${workers} nginx worker process(es), each started, and routes`, async () => {
      expect(pod.apisixWorkers).toBe(workers);
      expect(apisixProcesses(pod).workers).toHaveLength(workers);
      expect(startedWorkers(pod)).toEqual(Array.from({ length: workers }, (_, i) => i));
      for (let i = 0; i < 2 * workers; i++) {
        const res = await send(pod.app(), { url: `http://${REVIEWS.vip}/${i}` });
        expect(res.status).toBe(200);
        expect(res.echo).toMatchObject({ name: 'reviews', url: `/${i}` });
      }
      expect(pod.apisixErrors(), describeLines(pod.apisixErrors())).toEqual([]);
    }, 60_000);
  });
}
