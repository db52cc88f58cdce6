// The agent's incremental path (each changed resource prepared on its own, `ingest`, `assemble` of
// what depends on the change, `applyChanges` of the changed keys) against a fresh translation of the
// same state, after random sequences of pushes: the store must hold exactly what a fresh translator
// and a fresh applier give, with the same notes. And one changed assignment rewrites one key.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { encodeCanonical, decodeMessage } from '../../agent/xds/codec.js';
import { TYPE_URL, type XdsKind } from '../../agent/xds/protos.js';
import { MeshTranslator, translateMesh, type ApisixChanges, type XdsResources } from '../../agent/translate/snapshot.js';
import type { TranslationNote } from '../../agent/translate/apisix-types.js';
import { StoreApplier } from '../../agent/apply.js';
import { KvStore } from '../../agent/store/store.js';
import { keyFromText, keyToText } from '../../agent/store/keys.js';
import { stableId, upstreamId } from '../../agent/translate/ids.js';
import { loadCanonical } from '../support/xds-fixtures.js';
import { resourceName } from '../../agent/xds/config-dump.js';

const T = 'type.googleapis.com/';
const HCM = `${T}envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager`;
const ROUTER = { name: 'envoy.filters.http.router', typed_config: { '@type': `${T}envoy.extensions.filters.http.router.v3.Router` } };
const RBAC = { name: 'envoy.filters.http.rbac', typed_config: { '@type': `${T}envoy.extensions.filters.http.rbac.v3.RBAC`, rules: { action: 'DENY', policies: { 'ns[x]-policy[deny]-rule[0]': { permissions: [{ header: { name: ':method', string_match: { exact: 'DELETE' } } }], principals: [{ any: true }] } } } } };
const WASM = { name: 'custom', typed_config: { '@type': `${T}envoy.extensions.filters.http.wasm.v3.Wasm`, config: { name: 'custom' } } };

const A = 'outbound|80||a.ns.svc.cluster.local';
const B = 'outbound|80||b.ns.svc.cluster.local';
const C = 'outbound|80||c.ns.svc.cluster.local';
const SHARED = 'shared-eds';
const INBOUND = 'inbound|9080||';

const eds = (name: string, extra: object = {}, service = name) => ({ name, type: 'EDS', eds_cluster_config: { eds_config: { ads: {} }, service_name: service }, connect_timeout: '1s', ...extra });
const endpoint = (address: string, extra: object = {}) => ({ endpoint: { address: { socket_address: { address, port_value: 8080 } } }, ...extra });
const hcm = (config: object, filters: object[] = [ROUTER]) => ({ name: 'envoy.filters.network.http_connection_manager', typed_config: { '@type': HCM, stat_prefix: 's', http_filters: filters, ...config } });
const vhost = (name: string, domains: string[], routes: object[]) => ({ name, domains, routes });
const tcpListener = (name: string, target: object) => ({
  name,
  address: { socket_address: { address: '10.96.0.5', port_value: 5432 } },
  traffic_direction: 'OUTBOUND',
  filter_chains: [{ filters: [{ name: 'envoy.filters.network.tcp_proxy', typed_config: { '@type': `${T}envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy`, stat_prefix: 's', ...target } }] }],
});
const toCluster = (cluster: string, extra: object = {}) => ({ match: { prefix: '/' }, route: { cluster, timeout: '0s', ...extra } });

/** Every version of every resource a push may carry (canonical JSON), by type and name. */
const UNIVERSE: Record<XdsKind, Record<string, object[]>> = {
  cluster: {
    [A]: [
      eds(A),
      eds(A, { lb_policy: 'LEAST_REQUEST', connect_timeout: '2s', circuit_breakers: { thresholds: [{ max_requests: 10, max_pending_requests: 5 }] } }),
      eds(A, { lb_policy: 'RING_HASH' }),
      { name: A, type: 'ORIGINAL_DST', lb_policy: 'CLUSTER_PROVIDED', connect_timeout: '3s' },
      { name: A, type: 'STATIC', connect_timeout: '1s', load_assignment: { cluster_name: A, endpoints: [{ lb_endpoints: [endpoint('10.9.9.9')] }] } },
    ],
    [B]: [eds(B), eds(B, {}, SHARED), eds(B, { connect_timeout: '0.5s' })],
    [C]: [eds(C, {}, SHARED), eds(C), eds(C, { outlier_detection: { consecutive_5xx: 3 } })],
    PassthroughCluster: [
      { name: 'PassthroughCluster', type: 'ORIGINAL_DST', lb_policy: 'CLUSTER_PROVIDED', connect_timeout: '10s' },
      { name: 'PassthroughCluster', type: 'ORIGINAL_DST', lb_policy: 'CLUSTER_PROVIDED', connect_timeout: '4s' },
    ],
    [INBOUND]: [{ name: INBOUND, type: 'ORIGINAL_DST', lb_policy: 'CLUSTER_PROVIDED', connect_timeout: '10s' }],
  },
  endpoint: Object.fromEntries([A, B, C, SHARED].map((name, i) => [name, [
    { cluster_name: name, endpoints: [{ lb_endpoints: [endpoint(`10.0.${i}.1`)] }] },
    { cluster_name: name, endpoints: [{ lb_endpoints: [endpoint(`10.0.${i}.1`), endpoint(`10.0.${i}.2`, { load_balancing_weight: 3 })] }] },
    { cluster_name: name, endpoints: [{ lb_endpoints: [endpoint(`10.0.${i}.3`, { health_status: 'UNHEALTHY' })] }] },
    { cluster_name: name, endpoints: [{ locality: { zone: 'z1' }, load_balancing_weight: 1, lb_endpoints: [endpoint(`10.0.${i}.4`)] }, { locality: { zone: 'z2' }, load_balancing_weight: 2, priority: 1, lb_endpoints: [endpoint(`10.0.${i}.5`)] }] },
  ]])),
  listener: {
    '0.0.0.0_80': [
      { name: '0.0.0.0_80', address: { socket_address: { address: '0.0.0.0', port_value: 80 } }, traffic_direction: 'OUTBOUND', filter_chains: [{ filters: [hcm({ rds: { config_source: { ads: {} }, route_config_name: '80' } })] }] },
      { name: '0.0.0.0_80', address: { socket_address: { address: '0.0.0.0', port_value: 80 } }, traffic_direction: 'OUTBOUND', filter_chains: [{ filters: [hcm({ rds: { config_source: { ads: {} }, route_config_name: '81' } })] }] },
      { name: '0.0.0.0_80', address: { socket_address: { address: '0.0.0.0', port_value: 80 } }, traffic_direction: 'OUTBOUND', filter_chains: [{ filters: [hcm({ rds: { config_source: { ads: {} }, route_config_name: '80' } }, [RBAC, ROUTER])] }] },
    ],
    // a second scope for the same route configuration: translated again from its kept bytes
    '0.0.0.0_8080': [
      { name: '0.0.0.0_8080', address: { socket_address: { address: '0.0.0.0', port_value: 8080 } }, traffic_direction: 'OUTBOUND', filter_chains: [{ filters: [hcm({ rds: { config_source: { ads: {} }, route_config_name: '80' } })] }] },
      { name: '0.0.0.0_8080', address: { socket_address: { address: '0.0.0.0', port_value: 8080 } }, traffic_direction: 'OUTBOUND', filter_chains: [{ filters: [hcm({ rds: { config_source: { ads: {} }, route_config_name: '80' } }, [WASM, ROUTER])] }] },
    ],
    // TCP chains: their L4 objects follow the clusters they name (an upstream appearing or going)
    '10.96.0.5_5432': [
      tcpListener('10.96.0.5_5432', { cluster: B }),
      tcpListener('10.96.0.5_5432', { weighted_clusters: { clusters: [{ name: A, weight: 30 }, { name: C, weight: 70 }] } }),
      tcpListener('10.96.0.5_5432', { cluster: 'PassthroughCluster' }),
    ],
    virtualOutbound: [
      { name: 'virtualOutbound', address: { socket_address: { address: '0.0.0.0', port_value: 15001 } }, filter_chains: [{ filters: [{ name: 'envoy.filters.network.tcp_proxy', typed_config: { '@type': `${T}envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy`, stat_prefix: 'PassthroughCluster', cluster: 'PassthroughCluster' } }] }] },
    ],
    virtualInbound: [
      { name: 'virtualInbound', address: { socket_address: { address: '0.0.0.0', port_value: 15006 } }, traffic_direction: 'INBOUND', filter_chains: [{ filter_chain_match: { destination_port: 9080 }, filters: [hcm({ route_config: { name: INBOUND, virtual_hosts: [vhost('inbound', ['*'], [toCluster(INBOUND)])] } })] }] },
      { name: 'virtualInbound', address: { socket_address: { address: '0.0.0.0', port_value: 15006 } }, traffic_direction: 'INBOUND', filter_chains: [{ filter_chain_match: { destination_port: 9080 }, filters: [hcm({ route_config: { name: INBOUND, virtual_hosts: [vhost('inbound', ['*'], [toCluster(INBOUND)])] } }, [RBAC, ROUTER])] }] },
    ],
  },
  route: {
    '80': [
      { name: '80', virtual_hosts: [vhost('a', ['a.ns.svc.cluster.local'], [toCluster(A, { retry_policy: { num_retries: 2 } })]), vhost('b', ['b.ns.svc.cluster.local'], [toCluster(B)]), vhost('allow_any', ['*'], [toCluster('PassthroughCluster')])] },
      { name: '80', virtual_hosts: [vhost('a', ['a.ns.svc.cluster.local'], [toCluster(A, { hash_policy: [{ header: { header_name: 'x-user' } }] }), { match: { prefix: '/b' }, route: { cluster: B, retry_policy: { num_retries: 1 } } }]), vhost('b', ['b.ns.svc.cluster.local'], [toCluster(B, { retry_policy: { num_retries: 4 } })])] },
      { name: '80', virtual_hosts: [vhost('ab', ['ab.ns.svc.cluster.local'], [{ match: { prefix: '/' }, route: { weighted_clusters: { clusters: [{ name: A, weight: 30 }, { name: B, weight: 70 }] } } }]), vhost('c', ['c.ns.svc.cluster.local'], [toCluster(C), toCluster('outbound|80||gone.ns.svc.cluster.local')])] },
    ],
    '81': [
      { name: '81', virtual_hosts: [vhost('c', ['c.ns.svc.cluster.local'], [toCluster(C, { retry_policy: { num_retries: 3 } })]), vhost('a', ['a.ns.svc.cluster.local'], [toCluster(A, { retry_policy: { num_retries: 5 } })])] },
    ],
  },
};

const KINDS: XdsKind[] = ['cluster', 'endpoint', 'listener', 'route'];
const NAMES = KINDS.flatMap((kind) => Object.keys(UNIVERSE[kind]).map((name) => ({ kind, name })));
const WIRE = Object.fromEntries(KINDS.map((kind) => [kind, Object.fromEntries(Object.entries(UNIVERSE[kind]).map(([name, versions]) => [name, versions.map((v) => encodeCanonical(TYPE_URL[kind], v))]))])) as Record<XdsKind, Record<string, Uint8Array[]>>;

type Step = { op: 'set'; at: number; version: number } | { op: 'remove'; at: number } | { op: 'apply' };
const step: fc.Arbitrary<Step> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ op: fc.constant('set' as const), at: fc.nat(), version: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('remove' as const), at: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('apply' as const) }) },
);

const byKind = { cluster: 'clusters', endpoint: 'endpoints', listener: 'listeners', route: 'routeConfigs' } as const;

function storeContents(store: KvStore): Record<string, string> {
  return Object.fromEntries(store.range({ key: keyFromText('/apisix/'), rangeEnd: keyFromText('/apisix0') }).kvs.map((kv) => [keyToText(kv.key), Buffer.from(kv.value).toString('utf8')]));
}

const sortNotes = (notes: TranslationNote[]) => notes.map((n) => JSON.stringify(n)).sort();

describe('incremental translation = fresh translation of the same state', () => {
  it('after random pushes, the store and the notes are what a fresh translator and applier give', () => {
    // a random first state (most resources there), then random pushes
    const initial = fc.array(fc.option(fc.nat(), { freq: 4 }), { minLength: NAMES.length, maxLength: NAMES.length });
    fc.assert(
      fc.property(initial, fc.array(step, { minLength: 1, maxLength: 30 }), (first, pushes) => {
        const steps: Step[] = [...first.flatMap((version, at): Step[] => (version === null ? [] : [{ op: 'set', at, version }])), { op: 'apply' }, ...pushes];
        const state = { clusters: new Map(), endpoints: new Map(), listeners: new Map(), routeConfigs: new Map() } as { [K in keyof XdsResources]: Map<string, never> };
        const translator = new MeshTranslator();
        const objectApi = new MeshTranslator();
        const store = new KvStore();
        const applier = new StoreApplier(store);
        const check = () => {
          const changes: ApisixChanges = translator.assemble();
          const result = applier.applyChanges(changes);
          const fresh = translateMesh(state);
          const freshStore = new KvStore();
          const freshResult = new StoreApplier(freshStore).apply(fresh);
          expect(storeContents(store)).toEqual(storeContents(freshStore));
          expect(sortNotes([...changes.notes, ...result.invalid])).toEqual(sortNotes([...fresh.notes, ...freshResult.invalid]));
          expect([result.upstreams, result.routes]).toEqual([freshResult.upstreams, freshResult.routes]);
          // the object API (changes found by identity) gives the same whole configuration
          const viaObjects = objectApi.translate(state);
          expect(viaObjects.upstreams).toEqual(fresh.upstreams);
          expect(viaObjects.routes).toEqual(fresh.routes);
          expect(viaObjects.l4).toEqual(fresh.l4);
          expect(sortNotes(viaObjects.notes)).toEqual(sortNotes(fresh.notes));
        };
        for (const s of [...steps, { op: 'apply' } as const]) {
          if (s.op === 'apply') {
            check();
            continue;
          }
          const { kind, name } = NAMES[s.at % NAMES.length]!;
          const map = state[byKind[kind]];
          if (s.op === 'remove') {
            map.delete(name);
            translator.ingest({ kind, changed: new Map(), removed: [name] });
            continue;
          }
          const versions = WIRE[kind][name]!;
          const bytes = versions[s.version % versions.length]!;
          const resource = decodeMessage<never>(TYPE_URL[kind], bytes);
          map.set(name, resource);
          translator.ingest({ kind, changed: new Map([[name, translator.prepare(kind, name, resource, bytes)]]), removed: [] });
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('work proportional to the change', () => {
  const canonical = loadCanonical('synthetic-reviews-xds-responses.json');
  const start = () => {
    const translator = new MeshTranslator();
    for (const kind of KINDS) {
      const changed = new Map(canonical[kind].map((json) => {
        const name = resourceName(kind, json);
        const bytes = encodeCanonical(TYPE_URL[kind], json);
        return [name, translator.prepare(kind, name, decodeMessage(TYPE_URL[kind], bytes), bytes)] as const;
      }));
      translator.ingest({ kind, changed, removed: [] });
    }
    const store = new KvStore();
    const applier = new StoreApplier(store);
    applier.applyChanges(translator.assemble());
    return { translator, store, applier };
  };
  const push = (translator: MeshTranslator, kind: XdsKind, json: Record<string, unknown>) => {
    const name = resourceName(kind, json);
    const bytes = encodeCanonical(TYPE_URL[kind], json);
    translator.ingest({ kind, changed: new Map([[name, translator.prepare(kind, name, decodeMessage(TYPE_URL[kind], bytes), bytes)]]), removed: [] });
  };
  const written = (store: KvStore, revision: number) =>
    store.range({ key: keyFromText('/apisix/'), rangeEnd: keyFromText('/apisix0'), minModRevision: revision }).kvs.map((kv) => keyToText(kv.key));

  it('one changed endpoint: one upstream assembled, one key written in one revision, no route touched', () => {
    const { translator, store, applier } = start();
    const name = 'outbound|9080|v2|reviews.default.svc.cluster.local';
    const cla = structuredClone(canonical.endpoint.find((e) => e['cluster_name'] === name)!) as { endpoints: Array<{ lb_endpoints: unknown[] }> };
    cla.endpoints[0]!.lb_endpoints.push({ endpoint: { address: { socket_address: { address: '10.244.9.9', port_value: 9080 } } } });
    const routesBefore = storeContents(store);
    const revision = store.revision;
    push(translator, 'endpoint', cla as unknown as Record<string, unknown>);
    const changes = translator.assemble();
    expect([...changes.upstreams.keys()]).toEqual([upstreamId(name)]);
    expect(changes.routes.size).toBe(0);
    expect(changes.l4.size).toBe(0);
    expect(changes.full).toBe(false);
    applier.applyChanges(changes);
    expect(store.revision).toBe(revision + 1);
    // the cluster is Istio mTLS: the new endpoint's relay alias goes to the relay's entry too (docs/mtls.md)
    expect(written(store, revision + 1)).toEqual([`/apisix/mesh_tls/${stableId('mesh_tls', name)}`, `/apisix/upstreams/${upstreamId(name)}`]);
    for (const [key, value] of Object.entries(storeContents(store))) if (key.startsWith('/apisix/routes/')) expect(value).toBe(routesBefore[key]);
  });

  it('a TCP chain\'s cluster: its endpoints go to the stream workers\' copy, and an endpoint change rewrites that copy and its upstream, no listener', () => {
    const translator = new MeshTranslator();
    const store = new KvStore();
    const applier = new StoreApplier(store);
    for (const [kind, json] of [['cluster', UNIVERSE.cluster[A]![0]], ['cluster', UNIVERSE.cluster[B]![0]], ['endpoint', UNIVERSE.endpoint[A]![0]], ['endpoint', UNIVERSE.endpoint[B]![0]], ['listener', UNIVERSE.listener['10.96.0.5_5432']![0]], ['listener', UNIVERSE.listener['0.0.0.0_80']![0]], ['route', UNIVERSE.route['80']![0]]] as const) {
      push(translator, kind, json as Record<string, unknown>);
    }
    applier.applyChanges(translator.assemble());
    const copies = () => Object.entries(storeContents(store)).filter(([k]) => k.startsWith('/apisix/mesh_tcp_upstreams/') && !k.endsWith('/'));
    // B is named by the TCP chain; A only by HTTP routes: no copy of A for the stream workers
    expect(copies()).toEqual([[`/apisix/mesh_tcp_upstreams/${upstreamId(B)}`, JSON.stringify({ id: upstreamId(B), nodes: [{ host: '10.0.1.1', port: 8080, weight: 1 }], connect: 1, name: B })]]);

    const revision = store.revision;
    push(translator, 'endpoint', UNIVERSE.endpoint[B]![1] as Record<string, unknown>);
    const changes = translator.assemble();
    expect(changes.l4.size).toBe(0);
    applier.applyChanges(changes);
    expect(written(store, revision + 1)).toEqual([`/apisix/mesh_tcp_upstreams/${upstreamId(B)}`, `/apisix/upstreams/${upstreamId(B)}`]);
    expect(JSON.parse(copies()[0]![1]).nodes).toEqual([{ host: '10.0.1.1', port: 8080, weight: 1 }, { host: '10.0.1.2', port: 8080, weight: 3 }]);

    // the chain passes through instead: the copy goes, the upstream (HTTP routes use it) stays
    push(translator, 'listener', UNIVERSE.listener['10.96.0.5_5432']![2] as Record<string, unknown>);
    applier.applyChanges(translator.assemble());
    expect(copies()).toEqual([]);
    expect(storeContents(store)[`/apisix/upstreams/${upstreamId(B)}`]).toBeDefined();
  });

  it('a route configuration with one changed route: every route reassembled, only the changed one written', () => {
    const { translator, store, applier } = start();
    const rc = structuredClone(canonical.route.find((r) => r['name'] === '9080')!) as { virtual_hosts: Array<{ routes: Array<{ route?: { timeout?: string } }> }> };
    const route = rc.virtual_hosts.flatMap((v) => v.routes).find((r) => r.route)!;
    route.route!.timeout = '7s';
    const revision = store.revision;
    push(translator, 'route', rc as unknown as Record<string, unknown>);
    const changes = translator.assemble();
    expect(changes.routes.size).toBeGreaterThan(1);
    applier.applyChanges(changes);
    const keys = written(store, revision + 1);
    expect(keys).toHaveLength(1);
    expect(keys[0]).toMatch(/^\/apisix\/routes\//);
    expect(JSON.parse(storeContents(store)[keys[0]!]!).timeout.read).toBe(7);
  });
});
