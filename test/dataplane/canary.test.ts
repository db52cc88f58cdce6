// The seed canary (issue 5's VirtualService/DestinationRule in istiod's shapes) through the real
// APISIX: requests from the app with `baggage: canary=true` reach the canary subset, others the
// stable one; then istiod shifts 10 % of the rest to the canary, then scales stable down.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingForPod } from '../support/pod/requirements.js';
import type { RunningPod } from '../support/pod/pod-harness.js';
import { CANARY_CANARY, CANARY_HOST, CANARY_SERVICE_VIP, CANARY_STABLE, startCanaryPod } from '../support/pod/canary-pod.js';
import { describeLines } from '../support/pod/apisix-log.js';
import type { Echo, HttpAnswer } from '../support/pod/worker-client.js';

const SERVICE_VIP = CANARY_SERVICE_VIP; // the service's ClusterIP in the fixture's virtual host domains
const HOST = CANARY_HOST;
const ENDPOINTS = { canary: '10.244.5.21', 'stable-1': '10.244.5.11', 'stable-2': '10.244.5.12', 'stable-3-draining': '10.244.5.13' };
const STABLE = CANARY_STABLE;
const CANARY = CANARY_CANARY;

describeWhenAvailable('the seed canary through the real APISIX', missingForPod(), () => {
  let pod: RunningPod;

  beforeAll(async () => {
    pod = await startCanaryPod({ app: 'frontend', version: 'v1' }, ENDPOINTS);
  }, 60_000);
  afterAll(async () => {
    await pod?.stop();
  });

  /** `count` requests from the app; who answered each (or what went wrong). */
  async function callMany(count: number, headers: Record<string, string> = {}): Promise<Map<string, number>> {
    const tally = new Map<string, number>();
    for (let i = 0; i < count; i += 20) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(20, count - i) }, () => pod.app().http({ url: `http://${SERVICE_VIP}:8080/checkout`, headers: { host: HOST, ...headers } })),
      );
      for (const res of batch) {
        const key = 'error' in res ? `error ${res.error}` : res.status === 200 ? (JSON.parse(res.body) as Echo).name : `status ${res.status}`;
        tally.set(key, (tally.get(key) ?? 0) + 1);
      }
    }
    return tally;
  }

  it('baggage canary=true → canary; everything else → stable, never the draining host', async () => {
    const canary = await callMany(40, { baggage: 'canary=true' });
    expect(Object.fromEntries(canary)).toEqual({ canary: 40 });
    const others = await callMany(60, { baggage: 'canary=false' });
    expect(others.get('canary')).toBeUndefined();
    expect(others.get('stable-3-draining')).toBeUndefined();
    expect((others.get('stable-1') ?? 0) + (others.get('stable-2') ?? 0)).toBe(60);
    expect(others.get('stable-1')).toBeGreaterThan(10); // both stable hosts serve
    expect(others.get('stable-2')).toBeGreaterThan(10);
    const seen = (await pod.cluster.served('canary')).requests.at(-1)!;
    expect(seen.headers['host']).toBe(HOST);
    expect(seen.peer).toBe('10.66.0.2'); // from the pod's own address, as Envoy's outbound does
    expect(pod.apisixErrors(), describeLines(pod.apisixErrors())).toEqual([]);
  });

  it('a 90/10 shift of the rest to the canary, measured over 400 requests', async () => {
    const rc = structuredClone(pod.istiod.get('route', '8080')!) as { virtual_hosts: Array<{ routes: Array<{ name: string; route: Record<string, unknown> }> }> };
    const stableRoute = rc.virtual_hosts[1]!.routes.find((r) => r.name === 'stable')!;
    delete stableRoute.route['cluster'];
    stableRoute.route['weighted_clusters'] = { clusters: [{ name: STABLE, weight: 90 }, { name: CANARY, weight: 10 }] };
    pod.istiod.set('route', rc);
    await pod.push(['route']);
    const tally = await callMany(400);
    const canary = tally.get('canary') ?? 0;
    const stable = (tally.get('stable-1') ?? 0) + (tally.get('stable-2') ?? 0);
    expect(canary + stable, JSON.stringify(Object.fromEntries(tally))).toBe(400);
    // 10 % ± a wide margin (the split is weighted round robin in APISIX; 50/50 would be 200)
    expect(canary).toBeGreaterThanOrEqual(25);
    expect(canary).toBeLessThanOrEqual(60);
    expect(pod.apisixErrors(), describeLines(pod.apisixErrors())).toEqual([]);
  });

  it('scale-down: an endpoint istiod removes gets no more requests; the rest keep serving', async () => {
    const cla = structuredClone(pod.istiod.get('endpoint', STABLE)!) as { endpoints: Array<{ lb_endpoints: Array<{ endpoint: { address: { socket_address: { address: string } } } }> }> };
    for (const locality of cla.endpoints) {
      locality.lb_endpoints = locality.lb_endpoints.filter((e) => e.endpoint.address.socket_address.address !== ENDPOINTS['stable-2']);
    }
    pod.istiod.set('endpoint', cla);
    await pod.push(['endpoint']);
    const before = (await pod.cluster.served('stable-2')).count;
    const tally = await callMany(100);
    expect((await pod.cluster.served('stable-2')).count).toBe(before);
    expect(tally.get('stable-2')).toBeUndefined();
    expect((tally.get('stable-1') ?? 0) + (tally.get('canary') ?? 0)).toBe(100);
    expect(pod.apisixErrors(), describeLines(pod.apisixErrors())).toEqual([]);
  });
});
