// The sidecar's HTTP router (host_router.lua): APISIX's radixtree_host_uri with its host lookup as a
// table, the names of one service (istiod's virtual host domains: FQDN with and without its dot,
// name.namespace, .svc, the short name, the ClusterIP) sharing one URI radixtree (BENCHMARKS.md for
// the memory). On the real APISIX: a request by every name of every service reaches that service's
// endpoint and no other, through a rebuild that adds services and one that removes them; paths still
// pick their route; wildcard domains match by their longest suffix, after the exact names.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingForPod, podManifest } from '../support/pod/requirements.js';
import { startPod, type RunningPod } from '../support/pod/pod-harness.js';
import { describeLines } from '../support/pod/apisix-log.js';
import type { Echo } from '../support/pod/worker-client.js';
import { loadCanonical } from '../support/xds-fixtures.js';
import { allowAnyVirtualHost, edsCluster, httpRoute, loadAssignment, outboundHttpListener, routeConfiguration, serviceVirtualHost } from '../support/istio-xds.js';

const PORT = 9080;
const NS = 'routing';
const hostOf = (i: number) => `svc-${i}.${NS}.svc.cluster.local`;
const clusterOf = (i: number) => `outbound|${PORT}||${hostOf(i)}`;
const vipOf = (i: number) => `10.98.0.${10 + i}`;
const endpointOf = (i: number) => `10.244.9.${10 + i}`;
/** every name istiod's virtual host gives service i (serviceVirtualHost's domains) */
const namesOf = (i: number) => [hostOf(i), `${hostOf(i)}.`, `svc-${i}.${NS}`, `svc-${i}.${NS}.svc`, `svc-${i}`, vipOf(i)];

/** services 0..n-1; service 0 also sends /admin to service 1's endpoint (a second route in one list) */
function push(pod: RunningPod, n: number, extraVirtualHosts: Record<string, unknown>[] = []): Promise<void> {
  const vhosts = [];
  for (let i = 0; i < n; i++) {
    pod.istiod.set('cluster', edsCluster(clusterOf(i)));
    pod.istiod.set('endpoint', loadAssignment(clusterOf(i), [{ ip: endpointOf(i), port: PORT }]));
    const routes = [httpRoute('default', { prefix: '/' }, { cluster: clusterOf(i) })];
    if (i === 0) routes.unshift(httpRoute('admin', { prefix: '/admin' }, { cluster: clusterOf(1) }));
    vhosts.push(serviceVirtualHost(hostOf(i), PORT, vipOf(i), routes));
  }
  pod.istiod.set('route', routeConfiguration(PORT, [...vhosts, ...extraVirtualHosts, allowAnyVirtualHost()]));
  pod.istiod.set('listener', outboundHttpListener(PORT));
  return pod.push(['cluster', 'endpoint', 'listener', 'route'], { timeoutMs: 60_000 });
}

describeWhenAvailable('every name of every service routes to it through the sidecar\'s host router (real APISIX)', missingForPod(), () => {
  const SERVICES = 6;
  let pod: RunningPod;
  beforeAll(async () => {
    pod = await startPod({
      manifest: podManifest('client', NS, { app: 'client' }),
      xds: loadCanonical('synthetic-canary-xds-responses.json'),
      clusterAddresses: Array.from({ length: SERVICES }, (_, i) => [vipOf(i), endpointOf(i)]).flat(),
    });
    for (let i = 0; i < SERVICES; i++) await pod.cluster.serve(`svc-${i}`, endpointOf(i), PORT);
    await pod.kubelet.waitReady(30_000);
  }, 90_000);
  afterAll(async () => {
    await pod?.stop();
  });

  /** which endpoint answered a request to `vip` with Host `name` and `path` (or what went wrong) */
  async function served(vip: string, name: string, path = '/'): Promise<string> {
    const res = await pod.app().http({ url: `http://${vip}:${PORT}${path}`, headers: { host: name } });
    if ('error' in res) return `error ${res.error}`;
    return res.status === 200 ? (JSON.parse(res.body) as Echo).name : `status ${res.status}`;
  }

  async function expectEveryName(n: number): Promise<void> {
    for (let i = 0; i < n; i++) {
      // a few requests per name, so that both workers answer after their rebuild
      for (const name of namesOf(i)) for (let k = 0; k < 3; k++) expect(await served(vipOf(i), name), `${name}`).toBe(`svc-${i}`);
    }
  }

  it('after the first build: each name to its own service; /admin of service 0 to service 1', async () => {
    await push(pod, 4);
    await expectEveryName(4);
    for (const name of namesOf(0)) expect(await served(vipOf(0), name, '/admin/x')).toBe('svc-1');
    expect(pod.apisixErrors(), describeLines(pod.apisixErrors())).toEqual([]);
  }, 120_000);

  it('services added, then removed: every rebuild routes every name right, a removed service\'s names pass through', async () => {
    await push(pod, SERVICES);
    await expectEveryName(SERVICES);
    await push(pod, 2);
    await expectEveryName(2);
    // svc-3's names now match only the allow_any pass-through: the request goes to the address dialled
    expect(await served(endpointOf(3), hostOf(3))).toBe('svc-3');
    expect(pod.apisixErrors(), describeLines(pod.apisixErrors())).toEqual([]);
  }, 180_000);

  it('wildcard domains: the longest suffix wins, an exact name before any of them, and an exact name\'s unmatched path is Envoy\'s 404', async () => {
    const vhost = (name: string, domains: string[], routes: Record<string, unknown>[]) => ({ name, domains, routes, include_request_attempt_count: true });
    await push(pod, 4, [
      vhost('wild', [`*.wild.${NS}`], [httpRoute('wild', { prefix: '/' }, { cluster: clusterOf(2) })]),
      vhost('deep', [`*.deep.wild.${NS}`], [httpRoute('deep', { prefix: '/' }, { cluster: clusterOf(3) })]),
      vhost('exact', [`x.wild.${NS}`], [httpRoute('only', { prefix: '/only' }, { cluster: clusterOf(0) })]),
    ]);
    for (let k = 0; k < 3; k++) {
      expect(await served(vipOf(0), `y.wild.${NS}`)).toBe('svc-2');
      expect(await served(vipOf(0), `a.deep.wild.${NS}`)).toBe('svc-3');
      expect(await served(vipOf(0), `x.wild.${NS}`, '/only/1')).toBe('svc-0');
      // Envoy picks the exact name's virtual host and answers 404 when none of its routes match
      expect(await served(vipOf(0), `x.wild.${NS}`, '/other')).toBe('status 404');
      expect(await served(vipOf(1), hostOf(1))).toBe('svc-1');
    }
    expect(pod.apisixErrors(), describeLines(pod.apisixErrors())).toEqual([]);
  }, 120_000);
});
