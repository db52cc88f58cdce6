// Istio AuthorizationPolicy (Envoy's HTTP RBAC filter) enforced by the real APISIX, inbound, as
// istiod writes it: one app port per policy. Denied requests get Envoy's 403 `RBAC: access denied`
// and never reach the app; paths are judged (and forwarded) normalised, as Envoy's HTTP connection
// manager normalises them; the policy runs before a fault that would answer first; a policy on
// peer identities (mTLS principals, which the sidecar cannot know yet) denies.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingForPod, podManifest } from '../support/pod/requirements.js';
import { startPod, type RunningPod } from '../support/pod/pod-harness.js';
import { POD_IP } from '../support/pod/network.js';
import { describeLines } from '../support/pod/apisix-log.js';
import { send } from '../support/echo-requests.js';
import {
  blackHoleCluster, faultFilterConfig, fqdn, inboundCluster, inboundPassthroughCluster, MeshResources, passthroughCluster,
  rbacHttpFilter, virtualInbound, virtualOutbound, withHttpFilters,
} from '../support/istio-xds.js';
import { loadCanonical } from '../support/xds-fixtures.js';

const NS = 'test';
type Json = Record<string, unknown>;
const DENY_PORT = 8080;
const ALLOW_PORT = 9090;
const PRINCIPALS_PORT = 7070;
const FAULT_PORT = 6060;
const PORTS = [DENY_PORT, ALLOW_PORT, PRINCIPALS_PORT, FAULT_PORT];

const path = (m: Json) => ({ url_path: { path: m } });
const method = (m: string) => ({ header: { name: ':method', exact_match: m } });
const anyone = [{ any: true }];
/** Istio's shape: each rule an AND of ORs */
const rule = (...ors: Json[]) => ({ and_rules: { rules: ors.map((r) => ({ or_rules: { rules: [r] } })) } });

const denyAdmin = rbacHttpFilter('DENY', { 'ns[test]-policy[deny-admin]-rule[0]': { permissions: [rule(path({ prefix: '/admin' }))], principals: anyone } });
const allowInfoData = rbacHttpFilter('ALLOW', {
  'ns[test]-policy[allow]-rule[0]': { permissions: [rule(method('GET'), path({ prefix: '/info' })), rule(method('POST'), path({ exact: '/data' }))], principals: anyone },
});

/** The fixture's ALLOW filter: GET /info and POST /data, from listed principals and JWT issuers. */
function fixturePolicy(): Json {
  const istio = loadCanonical('istio-sidecar-listeners-configdump.yaml');
  const inbound = istio.listener.find((l) => l['name'] === 'virtualInbound')!;
  for (const chain of inbound['filter_chains'] as Json[]) {
    for (const f of chain['filters'] as Json[]) {
      const http = (f['typed_config'] as Json)['http_filters'] as Json[] | undefined;
      const rbac = http?.find((h) => h['name'] === 'envoy.filters.http.rbac' && (h['typed_config'] as Json)['rules']);
      if (rbac) return rbac;
    }
  }
  throw new Error('the fixture has no RBAC filter with rules');
}

function onPort(port: number) {
  return (chain: Json) => (chain['filter_chain_match'] as Json | undefined)?.['destination_port'] === port;
}

/** On FAULT_PORT every request is aborted with 503 by the route's fault: RBAC must answer first. */
function withFault(listener: Json): Json {
  for (const chain of listener['filter_chains'] as Json[]) {
    if (!onPort(FAULT_PORT)(chain)) continue;
    const hcm = (chain['filters'] as Json[])[0]!['typed_config'] as Json;
    const routes = ((hcm['route_config'] as Json)['virtual_hosts'] as Json[])[0]!['routes'] as Json[];
    routes[0]!['typed_per_filter_config'] = faultFilterConfig({ abort: { status: 503 } });
  }
  return listener;
}

function mesh(): MeshResources {
  const m = new MeshResources();
  m.cluster(passthroughCluster()).cluster(blackHoleCluster()).cluster(inboundPassthroughCluster());
  for (const port of PORTS) m.cluster(inboundCluster(port));
  let inbound = virtualInbound(PORTS.map((port) => ({ port, service: fqdn('app', NS) })));
  inbound = withHttpFilters(inbound, [denyAdmin], onPort(DENY_PORT));
  inbound = withHttpFilters(inbound, [allowInfoData], onPort(ALLOW_PORT));
  inbound = withHttpFilters(inbound, [fixturePolicy()], onPort(PRINCIPALS_PORT));
  inbound = withHttpFilters(inbound, [denyAdmin], onPort(FAULT_PORT));
  m.listener(withFault(inbound)).listener(virtualOutbound());
  return m;
}

describeWhenAvailable('AuthorizationPolicy (HTTP RBAC) enforced by the real APISIX', missingForPod(), () => {
  let pod: RunningPod;
  const noErrors = () => expect(pod.apisixErrors(), describeLines(pod.apisixErrors())).toEqual([]);
  const served = async (port: number) => (await pod.app().served(`app-${port}`)).count;
  const call = (port: number, target: string, httpMethod = 'GET') => send(pod.cluster, { url: `http://${POD_IP}:${port}/`, path: target, method: httpMethod });

  beforeAll(async () => {
    pod = await startPod({
      manifest: podManifest('app', NS, { app: 'app' }, [{ name: 'app', ports: PORTS }]),
      xds: mesh().resources,
      clusterAddresses: [],
    });
    await pod.kubelet.waitReady(20_000);
    expect(await pod.waitSynced()).toBe(true);
    await Promise.all(PORTS.map((port) => pod.app().serve(`app-${port}`, '0.0.0.0', port)));
  }, 60_000);
  afterAll(async () => {
    await pod?.stop();
  });

  it('DENY /admin: 403 RBAC: access denied and the app sees nothing; other paths reach it', async () => {
    const before = await served(DENY_PORT);
    for (const target of ['/admin', '/admin/users?x=1']) {
      expect(await call(DENY_PORT, target), target).toMatchObject({ status: 403, body: 'RBAC: access denied' });
    }
    expect(await served(DENY_PORT)).toBe(before);
    const ok = await call(DENY_PORT, '/public?x=1');
    expect(ok).toMatchObject({ status: 200 });
    expect(ok.echo).toMatchObject({ name: `app-${DENY_PORT}`, url: '/public?x=1' });
    noErrors();
  });

  it('paths are judged normalised, as Envoy normalises them: /public/../admin, //admin, /%61dmin are /admin', async () => {
    const before = await served(DENY_PORT);
    for (const target of ['/public/../admin', '//admin', '/%61dmin', '/./admin', '/public/%2e%2e/admin']) {
      expect(await call(DENY_PORT, target), target).toMatchObject({ status: 403, body: 'RBAC: access denied' });
    }
    expect(await served(DENY_PORT)).toBe(before);
    noErrors();
  });

  it('an allowed request reaches the app with the normalised path the policy judged (Envoy forwards it so too)', async () => {
    for (const [target, seen] of [['/public/../info?q=1', '/info?q=1'], ['//public//x', '/public/x'], ['/%70ublic', '/public']] as const) {
      const res = await call(DENY_PORT, target);
      expect(res.echo, target).toMatchObject({ name: `app-${DENY_PORT}`, url: seen });
    }
    noErrors();
  });

  it('ALLOW GET /info and POST /data: everything else 403', async () => {
    const before = await served(ALLOW_PORT);
    expect(await call(ALLOW_PORT, '/x', 'DELETE')).toMatchObject({ status: 403, body: 'RBAC: access denied' });
    expect(await call(ALLOW_PORT, '/other')).toMatchObject({ status: 403, body: 'RBAC: access denied' });
    expect(await call(ALLOW_PORT, '/data')).toMatchObject({ status: 403, body: 'RBAC: access denied' });
    expect(await call(ALLOW_PORT, '/other/../info/../data')).toMatchObject({ status: 403 }); // GET /data
    expect(await served(ALLOW_PORT)).toBe(before);
    expect((await call(ALLOW_PORT, '/info')).echo).toMatchObject({ name: `app-${ALLOW_PORT}`, url: '/info', method: 'GET' });
    expect((await call(ALLOW_PORT, '/data', 'POST')).echo).toMatchObject({ name: `app-${ALLOW_PORT}`, url: '/data', method: 'POST' });
    noErrors();
  });

  it('a policy on principals (the fixture\'s) denies: peer identities do not exist without mTLS', async () => {
    for (const [target, m] of [['/info', 'GET'], ['/data', 'POST'], ['/x', 'DELETE']] as const) {
      expect(await call(PRINCIPALS_PORT, target, m), `${m} ${target}`).toMatchObject({ status: 403, body: 'RBAC: access denied' });
    }
    expect(await served(PRINCIPALS_PORT)).toBe(0);
    noErrors();
  });

  it('RBAC answers before a fault that would abort every request', async () => {
    expect(await call(FAULT_PORT, '/admin')).toMatchObject({ status: 403, body: 'RBAC: access denied' });
    expect(await call(FAULT_PORT, '/other')).toMatchObject({ status: 503 });
    expect(await served(FAULT_PORT)).toBe(0);
    noErrors();
  });
});
