// End to end, in one process but over real sockets: fake istiod --ADS/gRPC--> agent (xDS client →
// translation → store) --etcd v3 HTTP gateway--> a simulation of APISIX 3.x's config_etcd (readdir,
// then one long watch). After every push (scale up/down, new route, weight change, deleted service)
// and a fake-istiod restart, what the simulated APISIX holds must equal the expected configuration.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgent, type RunningAgent } from '../../agent/agent.js';
import { nodeIdentityFromEnv } from '../../agent/xds/node.js';
import { translateMesh } from '../../agent/translate/snapshot.js';
import type { CanonicalResources } from '../../agent/xds/config-dump.js';
import { upstreamId } from '../../agent/translate/ids.js';
import { FakeIstiod } from '../support/fake-istiod.js';
import { decodeAll, loadCanonical } from '../support/xds-fixtures.js';
import { Apisix2Client, Apisix3Client } from '../support/apisix-watch-client.js';

const identity = nodeIdentityFromEnv({ POD_NAME: 'productpage-v1-abc', POD_NAMESPACE: 'default', INSTANCE_IP: '10.244.1.30' });
const V1 = 'outbound|9080|v1|reviews.default.svc.cluster.local';
const V3 = 'outbound|9080|v3|reviews.default.svc.cluster.local';

let istiod: FakeIstiod;
let agent: RunningAgent;
let apisix: Apisix3Client;
/** APISIX 2.x's per-directory watches must see the same configuration */
let apisix2: Apisix2Client;
let resources: CanonicalResources;
let istiodPort = 0;

/** The APISIX view the agent should produce for the fake istiod's current resources. */
function expected(): Map<string, string> {
  const config = translateMesh(decodeAll(resources));
  const view = new Map<string, string>();
  for (const u of config.upstreams.values()) view.set(`/apisix/upstreams/${u.id}`, JSON.stringify(u));
  for (const r of config.routes.values()) view.set(`/apisix/routes/${r.id}`, JSON.stringify(r));
  for (const l of config.l4.values()) view.set(`/apisix/mesh_l4/${l.id}`, JSON.stringify(l));
  for (const c of config.tlsRelay?.values() ?? []) view.set(`/apisix/mesh_tls/${c.id}`, JSON.stringify(c));
  for (const u of config.l4Upstreams?.values() ?? []) view.set(`/apisix/mesh_tcp_upstreams/${u.id}`, JSON.stringify(u));
  return view;
}

function viewObject(key: string): Record<string, unknown> {
  const text = apisix.view.get(key);
  if (!text) throw new Error(`APISIX has no ${key}`);
  return JSON.parse(text) as Record<string, unknown>;
}

function find<T extends Record<string, unknown>>(kind: 'endpoint' | 'route' | 'cluster', name: string): T {
  const key = kind === 'endpoint' ? 'cluster_name' : 'name';
  const r = resources[kind].find((x) => x[key] === name);
  if (!r) throw new Error(`no ${kind} ${name}`);
  return r as T;
}

/** Replace a resource in both the expectation and the fake istiod. */
function update(kind: 'endpoint' | 'route' | 'cluster', resource: Record<string, unknown>): void {
  const key = kind === 'endpoint' ? 'cluster_name' : 'name';
  resources[kind] = resources[kind].filter((x) => x[key] !== resource[key]).concat([resource]);
  istiod.set(kind, resource);
}

beforeAll(async () => {
  resources = loadCanonical('synthetic-reviews-xds-responses.json');
  istiod = new FakeIstiod(resources);
  istiodPort = await istiod.start();
  agent = await startAgent({
    xdsAddress: `127.0.0.1:${istiodPort}`,
    identity,
    etcdHost: '127.0.0.1',
    etcdPort: 0,
    statusHost: '127.0.0.1',
    statusPort: 0,
    // the agent's own defaults: a burst is one revision even on a loaded CI machine (with 20 ms a
    // descheduled moment between two of istiod's responses split one, at load 15)
    coalesceMs: 100,
    maxCoalesceMs: 1000,
    backoff: { initialMs: 50, maxMs: 300 },
    logger: { level: 'silent' },
  });
  apisix = new Apisix3Client(() => `http://127.0.0.1:${agent.etcdPort}`);
  apisix.start();
  apisix2 = new Apisix2Client(() => `http://127.0.0.1:${agent.etcdPort}`, '/apisix', ['routes', 'upstreams', 'mesh_l4', 'mesh_tls']);
  apisix2.start();
});

afterAll(async () => {
  await apisix?.stop();
  await apisix2?.stop();
  await agent?.close();
  await istiod?.stop();
});

describe('fake istiod → agent → etcd API → APISIX 3.x watch simulation', () => {
  it('serves the initial configuration and turns ready', async () => {
    await apisix.waitForView(expected(), 10_000);
    await apisix2.waitForView(expected(), 15_000);
    expect(agent.isReady()).toBe(true);
    expect(apisix.view.size).toBeGreaterThan(4);
    const ready = await fetch(`http://127.0.0.1:${agent.statusPort}/healthz/ready`);
    expect(ready.status).toBe(200);
  });

  it('scale up: a new endpoint arrives in a partial EDS push', async () => {
    const cla = structuredClone(find('endpoint', V1)) as { endpoints: Array<{ lb_endpoints: Array<Record<string, unknown>> }> };
    const extra = structuredClone(cla.endpoints[0]!.lb_endpoints[0]!) as { endpoint: { address: { socket_address: { address: string } } } };
    extra.endpoint.address.socket_address.address = '10.244.9.9';
    cla.endpoints[0]!.lb_endpoints.push(extra as unknown as Record<string, unknown>);
    update('endpoint', cla as unknown as Record<string, unknown>);
    const before = apisix.stats.readdirs;
    istiod.push(['endpoint'], [V1]);
    await apisix.waitForView(expected());
    await apisix2.waitForView(expected(), 15_000);
    // an mTLS cluster's nodes are the TLS relay's aliases; the relay's entry names the endpoints
    const nodes = viewObject(`/apisix/upstreams/${upstreamId(V1)}`)['nodes'] as Array<{ host: string }>;
    const relay = [...apisix.view.keys()].filter((k) => k.startsWith('/apisix/mesh_tls/')).map((k) => viewObject(k)).find((c) => c['cluster'] === V1);
    const hosts = relay ? (relay['endpoints'] as Array<{ host: string; alias: string }>) : nodes;
    expect(hosts.map((n) => n.host)).toContain('10.244.9.9');
    if (relay) expect(nodes.map((n) => n.host).sort()).toEqual((relay['endpoints'] as Array<{ alias: string }>).map((e) => e.alias).sort());
    expect(apisix.stats.readdirs).toBe(before); // arrived as a watch event, not a reload
  });

  it('scale down to zero: the upstream stays, without nodes', async () => {
    update('endpoint', { cluster_name: V1, endpoints: [] });
    istiod.push(['endpoint'], [V1]);
    await apisix.waitForView(expected());
    await apisix2.waitForView(expected(), 15_000);
    expect(viewObject(`/apisix/upstreams/${upstreamId(V1)}`)['nodes']).toEqual([]);
  });

  it('a new route, first in its virtual host', async () => {
    const rc = structuredClone(find('route', '9080')) as { virtual_hosts: Array<{ name: string; routes: unknown[] }> };
    const vhost = rc.virtual_hosts.find((v) => v.name.startsWith('reviews'))!;
    vhost.routes.unshift({ name: 'beta', match: { prefix: '/beta' }, route: { cluster: V3, timeout: '3s' } });
    update('route', rc as unknown as Record<string, unknown>);
    istiod.push(['route']);
    await apisix.waitForView(expected());
    await apisix2.waitForView(expected(), 15_000);
    const routes = [...apisix.view.entries()].filter(([k]) => k.startsWith('/apisix/routes/')).map(([, v]) => JSON.parse(v) as { name: string; priority: number });
    const beta = routes.find((r) => r.name.startsWith('beta#'))!;
    expect(beta).toBeDefined();
    expect(Math.max(...routes.filter((r) => r.name.includes('reviews')).map((r) => r.priority))).toBe(beta.priority);
  });

  it('a weight change in a weighted route', async () => {
    const rc = structuredClone(find('route', '9080')) as { virtual_hosts: Array<{ routes: Array<{ name?: string; route?: { weighted_clusters?: { clusters: Array<{ weight: number }> } } }> }> };
    const canary = rc.virtual_hosts.flatMap((v) => v.routes).find((r) => r.name === 'canary')!;
    canary.route!.weighted_clusters!.clusters[0]!.weight = 50;
    canary.route!.weighted_clusters!.clusters[1]!.weight = 50;
    update('route', rc as unknown as Record<string, unknown>);
    istiod.push(['route']);
    await apisix.waitForView(expected());
    await apisix2.waitForView(expected(), 15_000);
    const route = [...apisix.view.values()].map((v) => JSON.parse(v) as { name?: string; plugins?: Record<string, { rules: Array<{ weighted_upstreams: Array<{ weight: number }> }> }> }).find((r) => r.name?.startsWith('canary#'))!;
    expect(route.plugins!['traffic-split']!.rules[0]!.weighted_upstreams.map((w) => w.weight)).toEqual([50, 50]);
  });

  it('a deleted service: its upstream and the routes that used it disappear, as DELETE events', async () => {
    resources.cluster = resources.cluster.filter((c) => c['name'] !== V3);
    resources.endpoint = resources.endpoint.filter((c) => c['cluster_name'] !== V3);
    istiod.remove('cluster', V3);
    istiod.remove('endpoint', V3);
    istiod.push(['cluster']);
    await apisix.waitForView(expected());
    await apisix2.waitForView(expected(), 15_000);
    expect(apisix.view.has(`/apisix/upstreams/${upstreamId(V3)}`)).toBe(false);
    expect([...apisix.view.values()].some((v) => v.includes('"beta#'))).toBe(false);
  });

  it('istiod restarts (with changed config): the agent reconnects and converges, no stale leftovers', async () => {
    await istiod.stop();
    const cla = structuredClone(find('endpoint', 'outbound|9080|v2|reviews.default.svc.cluster.local')) as Record<string, unknown>;
    (cla as { endpoints: unknown[] }).endpoints = [];
    update('endpoint', cla);
    istiod = new FakeIstiod(resources);
    await new Promise((r) => setTimeout(r, 200));
    await istiod.start(istiodPort);
    await apisix.waitForView(expected(), 15_000);
    await apisix2.waitForView(expected(), 15_000);
    expect(viewObject(`/apisix/upstreams/${upstreamId('outbound|9080|v2|reviews.default.svc.cluster.local')}`)['nodes']).toEqual([]);
  });

  it('a burst touching every type lands as one store revision', async () => {
    const cla = structuredClone(find('endpoint', 'outbound|9080|v2|reviews.default.svc.cluster.local')) as { endpoints: Array<{ lb_endpoints: Array<{ load_balancing_weight?: number }> }> };
    cla.endpoints = [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: '10.244.7.7', port_value: 9080 } } } } as never] }];
    update('endpoint', cla as unknown as Record<string, unknown>);
    const rc = structuredClone(find('route', '9080')) as { virtual_hosts: Array<{ name: string; routes: unknown[] }> };
    rc.virtual_hosts.find((v) => v.name.startsWith('reviews'))!.routes.unshift({ name: 'gamma', match: { prefix: '/gamma' }, route: { cluster: V1 } });
    update('route', rc as unknown as Record<string, unknown>);
    const before = agent.store.revision;
    istiod.push(); // CDS, EDS, LDS, RDS back to back, as istiod does on a full push
    await apisix.waitForView(expected());
    await apisix2.waitForView(expected(), 15_000);
    expect(agent.store.revision).toBe(before + 1);
  });

  it('exposes metrics and the current config', async () => {
    const metrics = await (await fetch(`http://127.0.0.1:${agent.statusPort}/metrics`)).text();
    expect(metrics).toMatch(/apisix_mesh_xds_reconnects_total [1-9]/);
    expect(metrics).toMatch(/apisix_mesh_skipped_resources\{kind="route",reason="cluster-unavailable"\} [1-9]/); // allow_any among them: this fixture has no PassthroughCluster
    expect(metrics).toMatch(/apisix_mesh_store_revision \d+/);
    expect(metrics).toMatch(/apisix_mesh_etcd_watchers [1-9]/);
    const debug = (await (await fetch(`http://127.0.0.1:${agent.statusPort}/debug/config`)).json()) as { upstreams: unknown[]; routes: unknown[]; l4: unknown[]; tlsRelay: unknown[]; l4Upstreams: unknown[] };
    expect(debug.upstreams.length + debug.routes.length + debug.l4.length + debug.tlsRelay.length + debug.l4Upstreams.length).toBe(expected().size);
    // which push is served: the versions the served configuration was translated from, the last istiod sent
    const xds = (await (await fetch(`http://127.0.0.1:${agent.statusPort}/debug/xds`)).json()) as { xdsVersions: Record<string, string>; appliedXdsVersions: Record<string, string> };
    const lastSent = (kind: string) => istiod.responses.filter((r) => r.kind === kind).at(-1)?.version;
    for (const kind of ['cluster', 'endpoint', 'listener', 'route']) expect(xds.appliedXdsVersions[kind], kind).toBe(lastSent(kind));
    expect(xds.appliedXdsVersions).toEqual(xds.xdsVersions);
  });
});
