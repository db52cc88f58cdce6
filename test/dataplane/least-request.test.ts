// Envoy's LEAST_REQUEST (Istio's default load balancing) on the real APISIX: the sidecar's picker
// for least_conn upstreams (least_request.lua). An app calling a service one request at a time
// reaches all of its endpoints, and an endpoint added by istiod (a scale-up) gets its share at
// once. The pod runs one APISIX worker, so that every request meets the same picker: APISIX's own
// least_conn, with every server idle between requests, then answers from two of three endpoints
// only ({"reviews-1":45,"reviews-2":45}), and after the scale-up from three of four
// (test/agent/least-request.test.ts shows it beside this picker).
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingForPod, podManifest } from '../support/pod/requirements.js';
import { PLAINTEXT_ISTIOD_CONFIG, startPod, type RunningPod } from '../support/pod/pod-harness.js';
import { describeLines } from '../support/pod/apisix-log.js';
import { send } from '../support/echo-requests.js';
import { fqdn, loadAssignment, oneServiceMesh, outboundCluster } from '../support/istio-xds.js';

const NS = 'shop';
const REVIEWS = { vip: '10.96.42.1', port: 9080, host: fqdn('reviews', NS) };
const ENDPOINTS = ['10.244.42.1', '10.244.42.2', '10.244.42.3', '10.244.42.4'];
const CLUSTER = outboundCluster(80, REVIEWS.host);
const at = (ips: string[]) => ips.map((ip) => ({ ip, port: REVIEWS.port }));

function mesh() {
  return oneServiceMesh(REVIEWS, at(ENDPOINTS.slice(0, 3)));
}

describeWhenAvailable('Envoy\'s LEAST_REQUEST for least_conn upstreams (real APISIX)', missingForPod(), () => {
  let pod: RunningPod;
  beforeAll(async () => {
    pod = await startPod({
      manifest: podManifest('lb', NS, { app: 'lb' }, [{ name: 'app', ports: [8080] }]),
      // one worker: every request meets the same picker (with two, each worker's own picker could
      // hide a server the other never picks)
      config: { ...PLAINTEXT_ISTIOD_CONFIG, apisixWorkerProcesses: 1 },
      xds: mesh(),
      clusterAddresses: [REVIEWS.vip, ...ENDPOINTS],
    });
    await pod.kubelet.waitReady(60_000);
    expect(await pod.waitSynced()).toBe(true);
    for (const [i, ip] of ENDPOINTS.entries()) await pod.cluster.serve(`reviews-${i + 1}`, ip, REVIEWS.port);
  }, 120_000);
  afterAll(async () => {
    await pod?.stop();
  });

  /** `n` requests one after the other (each answered before the next): how many each endpoint answered */
  async function oneAtATime(n: number): Promise<Record<string, number>> {
    const got: Record<string, number> = {};
    for (let k = 0; k < n; k++) {
      const res = await send(pod.app(), { url: `http://${REVIEWS.vip}/` });
      expect(res.status).toBe(200);
      const name = res.echo!.name;
      got[name] = (got[name] ?? 0) + 1;
    }
    return got;
  }

  it('one request at a time reaches each of the three endpoints', async () => {
    const got = await oneAtATime(90);
    // 90 draws over 3: each endpoint at least 10 (all but certain: binomial(90, 1/3) < 10 is ~1e-5)
    for (const name of ['reviews-1', 'reviews-2', 'reviews-3']) expect(got[name] ?? 0, JSON.stringify(got)).toBeGreaterThanOrEqual(10);
    expect(pod.apisixErrors(), describeLines(pod.apisixErrors())).toEqual([]);
  }, 60_000);

  it('an endpoint istiod adds gets its share of one-at-a-time requests at once', async () => {
    pod.istiod.set('endpoint', loadAssignment(CLUSTER, at(ENDPOINTS)));
    await pod.push(['endpoint'], { timeoutMs: 30_000 });
    const got = await oneAtATime(120);
    for (const name of ['reviews-1', 'reviews-2', 'reviews-3', 'reviews-4']) expect(got[name] ?? 0, JSON.stringify(got)).toBeGreaterThanOrEqual(10);
    expect(pod.apisixErrors(), describeLines(pod.apisixErrors())).toEqual([]);
  }, 60_000);
});
