// AuthorizationPolicy AUDIT (Envoy's RBAC action LOG) on the real APISIX: it never denies, and a
// request a LOG policy matches leaves a warning in APISIX's error log ("apisix-mesh: RBAC audit:
// policy <name> of filter <filter> matched", with nginx's client and request line) that an operator
// can grep; a request it does not match leaves none. Before, LOG filters were skipped and wrote
// nothing. The DENY filter after it still denies: LOG changes no verdict.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingForPod, podManifest } from '../support/pod/requirements.js';
import { startPod, type RunningPod } from '../support/pod/pod-harness.js';
import { POD_IP } from '../support/pod/network.js';
import { describeLines } from '../support/pod/apisix-log.js';
import { send } from '../support/echo-requests.js';
import {
  blackHoleCluster, fqdn, inboundCluster, inboundPassthroughCluster, MeshResources, passthroughCluster,
  rbacHttpFilter, virtualInbound, virtualOutbound, withHttpFilters,
} from '../support/istio-xds.js';

const NS = 'test';
const PORT = 8080;
const AUDIT_POLICY = 'ns[test]-policy[audit-admin]-rule[0]';

function mesh(): MeshResources {
  const m = new MeshResources();
  m.cluster(passthroughCluster()).cluster(blackHoleCluster()).cluster(inboundPassthroughCluster()).cluster(inboundCluster(PORT));
  const filters = [
    rbacHttpFilter('LOG', { [AUDIT_POLICY]: { permissions: [{ url_path: { path: { prefix: '/admin' } } }], principals: [{ any: true }] } }),
    rbacHttpFilter('DENY', { 'ns[test]-policy[deny-secret]-rule[0]': { permissions: [{ url_path: { path: { prefix: '/admin/secret' } } }], principals: [{ any: true }] } }),
  ];
  const inbound = withHttpFilters(virtualInbound([{ port: PORT, service: fqdn('app', NS) }]), filters, () => true);
  return m.listener(inbound).listener(virtualOutbound());
}

describeWhenAvailable('AuthorizationPolicy AUDIT (RBAC LOG) writes a log line and denies nothing', missingForPod(), () => {
  let pod: RunningPod;
  const call = (path: string) => send(pod.cluster, { url: `http://${POD_IP}:${PORT}/`, path });
  const auditLines = () => pod.apisixLog().split('\n').filter((l) => l.includes('RBAC audit'));
  /** the audit lines once `count` of them mention `request` (the log reaches the harness through a pipe), at most 5 s */
  const awaitAudit = async (request: string, count: number) => {
    for (let waited = 0; waited < 5000 && auditLines().filter((l) => l.includes(request)).length < count; waited += 100) await new Promise((r) => setTimeout(r, 100));
    return auditLines().filter((l) => l.includes(request));
  };

  beforeAll(async () => {
    pod = await startPod({ manifest: podManifest('app', NS, { app: 'app' }, [{ name: 'app', ports: [PORT] }]), xds: mesh().resources, clusterAddresses: [] });
    await pod.kubelet.waitReady(20_000);
    expect(await pod.waitSynced()).toBe(true);
    await pod.app().serve('app', '0.0.0.0', PORT);
  }, 90_000);
  afterAll(async () => {
    await pod?.stop();
  });

  it('a request the LOG policy does not match passes and leaves no audit line', async () => {
    expect(await call('/public')).toMatchObject({ status: 200 });
    // a later request's line arriving means this one's would have too
    expect(await call('/admin/first')).toMatchObject({ status: 200 });
    expect(await awaitAudit('GET /admin/first', 1)).toHaveLength(1);
    expect(auditLines().filter((l) => l.includes('/public'))).toEqual([]);
  });

  it('a request it matches passes and leaves one warning naming the policy and the request', async () => {
    expect(await call('/admin/panel?x=1')).toMatchObject({ status: 200 });
    const lines = await awaitAudit('GET /admin/panel', 1);
    expect(lines, describeLines(lines)).toHaveLength(1);
    expect(lines[0]).toContain('[warn]');
    expect(lines[0]).toContain(`apisix-mesh: RBAC audit: policy ${AUDIT_POLICY} of filter envoy.filters.http.rbac matched`);
    expect(lines[0]).toContain('request: "GET /admin/panel?x=1 HTTP/1.1"');
  });

  it('the DENY filter after it still denies (and the request is audited too)', async () => {
    expect(await call('/admin/secret')).toMatchObject({ status: 403, body: 'RBAC: access denied' });
    expect(await awaitAudit('GET /admin/secret', 1)).toHaveLength(1);
    expect(pod.apisixErrors(), describeLines(pod.apisixErrors())).toEqual([]);
  });
});
