// Fail closed on the real APISIX: a filter chain carrying a filter the agent does not enforce has its
// traffic refused (403), never forwarded. Inbound: the Istio fixture's virtualInbound, whose chains
// carry an ALLOW AuthorizationPolicy (HTTP RBAC, enforced), ext_authz (a CUSTOM policy, not
// enforced) and a deny-all network RBAC (not enforced). Outbound: a service port whose chain carries
// a local rate limit added by an EnvoyFilter.
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { CanonicalResources } from '../../agent/xds/config-dump.js';
import { REFUSAL_BODY } from '../../agent/policy/refusal.js';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingForPod, podManifest } from '../support/pod/requirements.js';
import { startPod, type RunningPod } from '../support/pod/pod-harness.js';
import { POD_IP } from '../support/pod/network.js';
import { describeLines } from '../support/pod/apisix-log.js';
import type { Echo } from '../support/pod/worker-client.js';
import { loadCanonical, originalDstCluster } from '../support/xds-fixtures.js';

const SERVICE_VIP = '10.96.44.7';
const HOST = 'checkout.shop.svc.cluster.local';
const T = 'type.googleapis.com/';
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- canonical JSON edited in place
type Json = Record<string, any>;

function resources(): CanonicalResources {
  const canary = loadCanonical('synthetic-canary-xds-responses.json');
  const istio = loadCanonical('istio-sidecar-listeners-configdump.yaml');
  const virtualInbound = istio.listener.find((l) => l['name'] === 'virtualInbound')!;
  return {
    ...canary,
    cluster: [...canary.cluster, originalDstCluster('inbound|80||'), originalDstCluster('InboundPassthroughClusterIpv4')],
    listener: [...canary.listener.map(withRateLimit), virtualInbound],
  };
}

/** The outbound listener of port 8080 with a local rate limit in front of its router. */
function withRateLimit(listener: Json): Json {
  const copy = structuredClone(listener);
  for (const chain of copy['filter_chains'] ?? []) {
    for (const f of chain.filters ?? []) {
      const filters = f.typed_config?.http_filters as Json[] | undefined;
      filters?.splice(filters.length - 1, 0, {
        name: 'envoy.filters.http.local_ratelimit',
        typed_config: { '@type': `${T}envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit`, stat_prefix: 'rl' },
      });
    }
  }
  return copy;
}

/** The listener without the filters named (their policy removed, as istiod would push it). */
function without(listener: Json, pattern: RegExp): Json {
  const copy = structuredClone(listener);
  for (const chain of copy['filter_chains'] ?? []) {
    chain.filters = (chain.filters as Json[]).filter((f) => !pattern.test(f.name));
    for (const f of chain.filters) {
      if (f.typed_config?.http_filters) f.typed_config.http_filters = (f.typed_config.http_filters as Json[]).filter((h) => !pattern.test(h.name));
    }
  }
  return copy;
}

describeWhenAvailable('fail closed: unenforced filters refuse their traffic (real APISIX)', missingForPod(), () => {
  let pod: RunningPod;
  const xds = resources();
  beforeAll(async () => {
    pod = await startPod({
      manifest: podManifest('httpbin', 'default', { app: 'httpbin', version: 'v1' }, [{ name: 'httpbin', ports: [80] }]),
      xds,
      clusterAddresses: [SERVICE_VIP, '10.244.5.21', '10.244.5.11', '10.244.5.12'],
    });
    await pod.app().serve('httpbin', '0.0.0.0', 80);
    for (const [name, ip] of [['canary', '10.244.5.21'], ['stable-1', '10.244.5.11'], ['stable-2', '10.244.5.12']] as const) await pod.cluster.serve(name, ip, 8080);
    await pod.kubelet.waitReady(20_000);
  }, 60_000);
  afterAll(async () => {
    await pod?.stop();
  });

  it('inbound under an AuthorizationPolicy the agent does not enforce: 403, the app sees nothing', async () => {
    for (const [path, method] of [['/info', 'GET'], ['/data', 'POST'], ['/x', 'DELETE']] as const) {
      const res = await pod.cluster.http({ url: `http://${POD_IP}:80${path}`, method });
      expect(res, `${method} ${path}`).toMatchObject({ status: 403, body: REFUSAL_BODY });
    }
    // a port without its own chain falls to the catch-all chains, which carry the policy too
    expect(await pod.cluster.http({ url: `http://${POD_IP}:8081/` })).toMatchObject({ status: 403 });
    expect((await pod.app().served('httpbin')).count).toBe(0);
    expect(pod.apisixErrors(), describeLines(pod.apisixErrors())).toEqual([]);
  });

  it('outbound through a chain with a local rate limit (an EnvoyFilter): 403, no endpoint sees it', async () => {
    const res = await pod.app().http({ url: `http://${SERVICE_VIP}:8080/`, headers: { host: HOST } });
    expect(res).toMatchObject({ status: 403, body: REFUSAL_BODY });
    for (const name of ['canary', 'stable-1', 'stable-2']) expect((await pod.cluster.served(name)).count).toBe(0);
  });

  it('without ext_authz the chain is enforced, not refused: the RBAC policy (on peer principals) denies as Envoy says', async () => {
    pod.istiod.set('listener', without(xds.listener.find((l) => l['name'] === 'virtualInbound')!, /ext_authz/));
    await pod.push(['listener']);
    for (const [path, method] of [['/info', 'GET'], ['/data', 'POST']] as const) {
      const res = await pod.cluster.http({ url: `http://${POD_IP}:80${path}`, method });
      expect(res, `${method} ${path}`).toMatchObject({ status: 403, body: 'RBAC: access denied' });
    }
    // the catch-all chains still carry the network RBAC: refused
    expect(await pod.cluster.http({ url: `http://${POD_IP}:8081/` })).toMatchObject({ status: 403, body: REFUSAL_BODY });
    expect((await pod.app().served('httpbin')).count).toBe(0);
    expect(pod.apisixErrors(), describeLines(pod.apisixErrors())).toEqual([]);
  });

  it('control: once istiod drops those filters, the same requests go through', async () => {
    pod.istiod.set('listener', without(xds.listener.find((l) => l['name'] === 'virtualInbound')!, /rbac|ext_authz/));
    pod.istiod.set('listener', loadCanonical('synthetic-canary-xds-responses.json').listener[0]!); // without the rate limit
    await pod.push(['listener']);
    const inbound = await pod.cluster.http({ url: `http://${POD_IP}:80/info` });
    expect(inbound).toMatchObject({ status: 200 });
    if ('body' in inbound) expect(JSON.parse(inbound.body) as Echo).toMatchObject({ name: 'httpbin', peer: '127.0.0.6' });
    const outbound = await pod.app().http({ url: `http://${SERVICE_VIP}:8080/`, headers: { host: HOST } });
    expect(outbound).toMatchObject({ status: 200 });
    expect(pod.apisixErrors(), describeLines(pod.apisixErrors())).toEqual([]);
  });
});
