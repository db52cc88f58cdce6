// Translation rules one at a time, on small resources written in canonical JSON (as istiod would
// send them) and decoded through protobuf bytes like a live stream.
import { describe, expect, it } from 'vitest';
import { encodeMessage, fromCanonical, unpackAny, type PackedAny } from '../../agent/xds/codec.js';
import { TYPE_URL } from '../../agent/xds/protos.js';
import type { Cluster, ClusterLoadAssignment, HttpConnectionManager, Listener, RouteConfiguration } from '../../agent/xds/envoy-types.js';
import { translateCluster } from '../../agent/translate/cluster.js';
import { translateClusterLoadAssignment } from '../../agent/translate/endpoints.js';
import { translateRouteConfiguration } from '../../agent/translate/route-configuration.js';
import { translateListener } from '../../agent/translate/listener.js';
import { MeshTranslator, translateMesh } from '../../agent/translate/snapshot.js';
import { upstreamId } from '../../agent/translate/ids.js';
import { validateApisix } from '../../agent/schema/validate.js';
import { loadXds } from '../support/xds-fixtures.js';

const cluster = (json: object) => fromCanonical<Cluster>(TYPE_URL.cluster, json);
const cla = (json: object) => fromCanonical<ClusterLoadAssignment>(TYPE_URL.endpoint, json);
const rc = (json: object) => fromCanonical<RouteConfiguration>(TYPE_URL.route, json);
const listener = (json: object) => fromCanonical<Listener>(TYPE_URL.listener, json);
const scope = { direction: 'outbound' as const, port: 9080 };

function routesOf(routes: object[], domains = ['svc.ns.svc.cluster.local']) {
  const t = translateRouteConfiguration(rc({ name: '9080', virtual_hosts: [{ name: 'vh', domains, routes }] }), scope);
  return t;
}
const ep = (address: string, extra: object = {}) => ({ endpoint: { address: { socket_address: { address, port_value: 8080 } } }, ...extra });

describe('Cluster → upstream', () => {
  it('keeps sub-second connect timeouts', () => {
    const t = translateCluster(cluster({ name: 'outbound|80||a', type: 'EDS', connect_timeout: '0.250s' }));
    expect(t.upstream?.timeout?.connect).toBe(0.25);
  });
  it('maps load balancing policies', () => {
    expect(translateCluster(cluster({ name: 'a', type: 'EDS' })).upstream?.type).toBe('roundrobin');
    expect(translateCluster(cluster({ name: 'a', type: 'EDS', lb_policy: 'LEAST_REQUEST' })).upstream?.type).toBe('least_conn');
    expect(translateCluster(cluster({ name: 'a', type: 'EDS', lb_policy: 'RING_HASH' })).consistentHash).toBe(true);
  });
  it('proxies HTTP/2 upstreams with nginx\'s gRPC proxy, and says so', () => {
    const t = translateCluster(cluster({ name: 'outbound|9090||grpc.ns.svc.cluster.local', type: 'EDS', typed_extension_protocol_options: { 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': { '@type': 'type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions', explicit_http_config: { http2_protocol_options: {} } } } }));
    expect(t.notes.map((n) => [n.reason, n.skipped])).toEqual([['http2-upstream', false]]);
    expect(t.upstream?.scheme).toBe('grpc');
  });
  it('ids are stable and differ per name', () => {
    const a = translateCluster(cluster({ name: 'outbound|80||a', type: 'EDS' })).upstream!.id;
    expect(translateCluster(cluster({ name: 'outbound|80||a', type: 'EDS' })).upstream!.id).toBe(a);
    expect(translateCluster(cluster({ name: 'outbound|80||b', type: 'EDS' })).upstream!.id).not.toBe(a);
    expect(a).toMatch(/^[0-9a-f]{16}$/);
  });
  it('original-destination clusters, inbound and outbound, go to where the client dialled (an inbound gRPC port over HTTP/2)', () => {
    const inbound = translateCluster(cluster({ name: 'inbound|9080||', type: 'ORIGINAL_DST', lb_policy: 'CLUSTER_PROVIDED', connect_timeout: '10s' }));
    expect(inbound.upstream).toBeUndefined();
    expect(inbound.originalDestination).toEqual({ connectTimeout: 10 });
    const http2 = { 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': { '@type': 'type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions', explicit_http_config: { http2_protocol_options: {} } } };
    const grpc = translateCluster(cluster({ name: 'inbound|9090||', type: 'ORIGINAL_DST', connect_timeout: '10s', typed_extension_protocol_options: http2 }));
    expect(grpc.originalDestination).toEqual({ connectTimeout: 10, scheme: 'grpc' });
    const pass = translateCluster(cluster({ name: 'PassthroughCluster', type: 'ORIGINAL_DST', connect_timeout: '0.5s' }));
    expect(pass.upstream).toBeUndefined();
    expect(pass.originalDestination).toEqual({ connectTimeout: 0.5 });
    expect(pass.notes).toEqual([]);
  });
});

describe('ClusterLoadAssignment → nodes', () => {
  it('drops unhealthy and draining hosts, negates priorities, keeps weights', () => {
    const t = translateClusterLoadAssignment(cla({
      cluster_name: 'c',
      endpoints: [
        { locality: { zone: 'a' }, load_balancing_weight: 3, lb_endpoints: [ep('10.0.0.1', { load_balancing_weight: 2 }), ep('10.0.0.2'), ep('10.0.0.9', { health_status: 'UNHEALTHY' }), ep('10.0.0.8', { health_status: 'DRAINING' })] },
        { locality: { zone: 'b' }, priority: 1, load_balancing_weight: 1, lb_endpoints: [ep('10.0.1.1')] },
      ],
    }));
    expect(t.nodes).toEqual([
      { host: '10.0.0.1', port: 8080, weight: 2 },
      { host: '10.0.0.2', port: 8080, weight: 1 },
      { host: '10.0.1.1', port: 8080, weight: 3, priority: -1 },
    ]);
  });
  it('splits by locality weight first, then by host weight inside the locality', () => {
    // locality A (weight 1, two hosts) and B (weight 1, one host): each A host gets 1/4, B gets 1/2
    const t = translateClusterLoadAssignment(cla({
      cluster_name: 'c',
      endpoints: [
        { load_balancing_weight: 1, lb_endpoints: [ep('10.0.0.1'), ep('10.0.0.2')] },
        { load_balancing_weight: 1, lb_endpoints: [ep('10.0.0.3')] },
      ],
    }));
    expect(t.nodes.map((n) => n.weight)).toEqual([1, 1, 2]);
  });
  it('an empty assignment gives no nodes (and a valid upstream)', () => {
    const nodes = translateClusterLoadAssignment(cla({ cluster_name: 'c' })).nodes;
    expect(nodes).toEqual([]);
    expect(validateApisix('upstream', { id: 'a', type: 'roundrobin', nodes })).toBeNull();
  });
});

describe('RouteConfiguration → routes', () => {
  it('keeps Envoy first-match order with decreasing priorities, catch-all host last', () => {
    const t = translateRouteConfiguration(rc({
      name: '9080',
      virtual_hosts: [
        { name: 'any', domains: ['*'], routes: [{ name: 'allow_any', match: { prefix: '/' }, route: { cluster: 'x' } }] },
        { name: 'vh', domains: ['a.ns.svc.cluster.local', 'a.ns.svc.cluster.local:9080', 'a'], routes: [
          { name: 'r1', match: { prefix: '/' , headers: [{ name: 'end-user', string_match: { exact: 'jason' } }] }, route: { cluster: 'v2' } },
          { name: 'r2', match: { prefix: '/reviews' }, route: { cluster: 'v1' } },
        ] },
      ],
    }), scope);
    const byName = Object.fromEntries(t.routes.map((r) => [r.route.desc, r.route]));
    expect(byName['vh r1']!.priority).toBeGreaterThan(byName['vh r2']!.priority);
    expect(byName['vh r2']!.priority).toBeGreaterThan(byName['any allow_any']!.priority);
    // Envoy answers 404 inside the chosen host; APISIX must not fall through to the `*` host
    const notFound = t.routes.find((r) => r.route.name.startsWith('not-found#'))!.route;
    expect(notFound.plugins).toEqual({ 'fault-injection': { abort: { http_status: 404 } } });
    expect(notFound.hosts).toEqual(byName['vh r1']!.hosts);
    expect(notFound.priority).toBeLessThan(byName['vh r2']!.priority);
    expect(notFound.priority).toBeGreaterThan(byName['any allow_any']!.priority);
    expect(new Set(t.routes.map((r) => r.route.priority)).size).toBe(t.routes.length);
    expect(byName['vh r1']!.hosts).toEqual(['a', 'a.ns.svc.cluster.local']);
    expect(byName['any allow_any']!.hosts).toBeUndefined();
    for (const r of t.routes) expect(r.route.uri).toBe('/*');
  });
  it('leaves out domains APISIX cannot express, and a host made only of them', () => {
    const t = translateRouteConfiguration(rc({ name: '80', virtual_hosts: [
      { name: 'mixed', domains: ['a.example.com', 'b.*'], routes: [{ match: { prefix: '/' }, route: { cluster: 'c' } }] },
      { name: 'only', domains: ['c.*'], routes: [{ match: { prefix: '/' }, route: { cluster: 'c' } }] },
    ] }), { direction: 'outbound', port: 80 });
    expect(t.routes.map((r) => r.route.hosts)).toEqual([['a.example.com']]);
    expect(t.notes.map((n) => [n.reason, n.skipped])).toEqual([['unsupported-domain', false], ['unsupported-domain', true]]);
  });

  it('ranks scopes as Envoy picks listeners and chains: one address, then the port, then catch-all', () => {
    const many = rc({ name: '9153', virtual_hosts: [{ name: 'v', domains: ['*'], routes: Array.from({ length: 5 }, (_, i) => ({ name: `r${i}`, match: { prefix: `/${i}` }, route: { cluster: 'c' } })) }] });
    const priorities = (s: Parameters<typeof translateRouteConfiguration>[1]) => translateRouteConfiguration(many, s).routes.map((r) => r.route.priority);
    const address = priorities({ direction: 'outbound', port: 9153, address: '10.96.0.10' });
    const port = priorities({ direction: 'outbound', port: 9153 });
    const catchAll = priorities({ direction: 'inbound', port: 0 });
    expect(Math.min(...address)).toBeGreaterThan(Math.max(...port));
    expect(Math.min(...port)).toBeGreaterThan(Math.max(...catchAll));
    for (const p of [address, port, catchAll]) expect(p).toEqual([...p].sort((a, b) => b - a)); // first match first
  });

  it('anchors the port so 80 does not match 8080', () => {
    const t = translateRouteConfiguration(rc({ name: '80', virtual_hosts: [{ name: 'v', domains: ['*'], routes: [{ match: { prefix: '/' }, route: { cluster: 'c' } }] }] }), { direction: 'outbound', port: 80 });
    const v = t.routes[0]!.route.vars!.find((x) => x[0] === 'connection_original_dst')!;
    const re = new RegExp(String(v[2]));
    expect(re.test('10.0.0.1:80')).toBe(true);
    expect(re.test('10.0.0.1:8080')).toBe(false);
    expect(re.test('10.0.0.1:180')).toBe(false);
  });
  it('escapes literal header values and maps path matches', () => {
    const t = routesOf([
      { name: 'a', match: { path: '/exact.html', headers: [{ name: 'x-ver', string_match: { prefix: 'v1.2+' } }] }, route: { cluster: 'c' } },
      { name: 'b', match: { prefix: '/api/v1.0', case_sensitive: false, query_parameters: [{ name: 'q', string_match: { exact: 'a.b' } }] }, route: { cluster: 'c' } },
      { name: 'c', match: { safe_regex: { regex: '/items/[0-9]+' }, headers: [{ name: 'x-debug', present_match: true, invert_match: true }] }, route: { cluster: 'c' } },
    ]);
    const [a, b, c] = t.routes.map((r) => r.route.vars!.slice(2));
    expect(a).toEqual([['uri', '==', '/exact.html'], ['http_x_ver', '~~', '^v1\\.2\\+']]);
    expect(b).toEqual([['uri', '~*', '^\\/api\\/v1\\.0'], ['arg_q', '==', 'a.b']]);
    expect(c).toEqual([['uri', '~~', '^(?:/items/[0-9]+)\\z'], ['http_x_debug', '!', '~~', '^']]);
    for (const r of t.routes) expect(validateApisix('route', r.route)).toBeNull();
  });
  it('weighted clusters → traffic-split, zero weights dropped', () => {
    const t = routesOf([{ match: { prefix: '/' }, route: { weighted_clusters: { clusters: [{ name: 'v1', weight: 80 }, { name: 'v2', weight: 20 }, { name: 'v3', weight: 0 }] } } }]);
    const r = t.routes[0]!;
    expect(r.clusters).toEqual(['v1', 'v2']);
    expect(r.route.upstream_id).toBe(upstreamId('v1'));
    expect(r.route.plugins?.['traffic-split']).toEqual({ rules: [{ weighted_upstreams: [{ upstream_id: upstreamId('v1'), weight: 80 }, { upstream_id: upstreamId('v2'), weight: 20 }] }] });
    expect(validateApisix('route', r.route)).toBeNull();
  });
  it('timeouts, retries, rewrite, mirror, fault injection', () => {
    const t = routesOf([{
      match: { prefix: '/old/' },
      route: {
        cluster: 'outbound|9080|v1|r.ns.svc.cluster.local', timeout: '1.5s', prefix_rewrite: '/new/', host_rewrite_literal: 'example.org',
        retry_policy: { retry_on: '5xx', num_retries: 4 },
        request_mirror_policies: [{ cluster: 'outbound|9080||shadow.ns.svc.cluster.local', runtime_fraction: { default_value: { numerator: 25 } } }],
      },
      typed_per_filter_config: { 'envoy.filters.http.fault': { '@type': 'type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault', abort: { http_status: 503, percentage: { numerator: 10 } }, delay: { fixed_delay: '0.5s', percentage: { numerator: 500000, denominator: 'MILLION' } } } },
    }]);
    const r = t.routes[0]!;
    expect(r.route.timeout).toEqual({ connect: 1.5, send: 1.5, read: 1.5 });
    expect(r.upstreamSettings.retries).toBe(4);
    expect(r.route.plugins?.['proxy-rewrite']).toEqual({ regex_uri: ['^\\/old\\/(.*)', '/new/$1'], host: 'example.org' });
    // the mirror goes to the cluster's endpoints (test/agent/http-semantics.test.ts)
    // then the hand-over to the retry location of retry_on 5xx (test/agent/http-semantics.test.ts)
    expect(r.route.plugins?.['apisix-mesh-access']).toMatchObject({ mirror: { mirrors: [{ numerator: 25, denominator: 100 }] }, retry: { location: 'apisix_mesh_retry_5xx' } });
    expect(r.route.plugins?.['fault-injection']).toEqual({ abort: { http_status: 503, percentage: 10 }, delay: { duration: 0.5, percentage: 50 } });
    expect(validateApisix('route', r.route)).toBeNull();
  });
  it('redirects and direct responses need no upstream', () => {
    const t = routesOf([
      { name: 'r', match: { prefix: '/' , headers: [{ name: ':scheme', string_match: { exact: 'http' } }] }, redirect: { https_redirect: true, response_code: 'PERMANENT_REDIRECT' } },
      { name: 'd', match: { path: '/health' }, direct_response: { status: 204 } },
    ]);
    expect(t.routes[0]!.route.plugins?.['redirect']).toEqual({ uri: 'https://$http_host$request_uri', ret_code: 308 });
    expect(t.routes[0]!.route.upstream_id).toBeUndefined();
    expect(t.routes[1]!.route.plugins?.['fault-injection']).toEqual({ abort: { http_status: 204 } });
    for (const r of t.routes) expect(validateApisix('route', r.route)).toBeNull();
  });
  it('skips what it cannot express, with a reason, and keeps the rest', () => {
    const t = routesOf([
      { name: 'bad', match: { prefix: '/', headers: [{ name: 'x', range_match: { start: '1', end: '5' } }] }, route: { cluster: 'c' } },
      { name: 'hdr', match: { prefix: '/' }, route: { cluster_header: 'x-cluster' } },
      { name: 'ok', match: { prefix: '/' }, route: { cluster: 'c' } },
    ]);
    expect(t.routes.map((r) => r.route.desc)).toEqual(['vh ok']);
    expect(t.notes.map((n) => n.reason).sort()).toEqual(['cluster-header', 'header-range-match']);
  });
  it('never drops a condition it cannot evaluate: a route on a JWT claim (dynamic metadata) is skipped, not matched by all', () => {
    const claim = { filter: 'envoy.filters.http.jwt_authn', path: [{ key: 'payload' }, { key: 'groups' }], value: { list_match: { one_of: { string_match: { exact: 'admin' } } } } };
    const t = routesOf([
      { name: 'admins', match: { prefix: '/', dynamic_metadata: [claim] }, route: { cluster: 'admin' } },
      { name: 'tls', match: { prefix: '/', tls_context: { presented: true } }, route: { cluster: 'admin' } },
      { name: 'everyone', match: { prefix: '/' }, route: { cluster: 'c' } },
    ]);
    expect(t.routes.map((r) => r.route.desc)).toEqual(['vh everyone']);
    expect(t.notes.map((n) => n.reason).sort()).toEqual(['dynamic-metadata-match', 'tls-context-match']);
  });
  // The three below were found on the real APISIX (test/dataplane/translation-rules.test.ts).
  it('an inverted value matcher needs the header (as Envoy) unless a missing header counts as empty (Istio withoutHeaders)', () => {
    const t = routesOf([
      { name: 'plain', match: { prefix: '/', headers: [{ name: 'x-env', string_match: { exact: 'prod' }, invert_match: true }] }, route: { cluster: 'c' } },
      { name: 'istio', match: { prefix: '/', headers: [{ name: 'x-env', string_match: { exact: 'prod' }, invert_match: true, treat_missing_header_as_empty: true }] }, route: { cluster: 'c' } },
    ]);
    const [plain, istio] = t.routes.map((r) => r.route.vars!.slice(2));
    expect(plain).toEqual([['http_x_env', '~~', '^'], ['http_x_env', '!', '==', 'prod']]);
    expect(istio).toEqual([['http_x_env', '!', '==', 'prod']]);
  });
  it('header operations of the route, its virtual host and its configuration, the less specific last', () => {
    const add = (key: string, value: string, append = false) => ({ header: { key, value }, append_action: append ? 'APPEND_IF_EXISTS_OR_ADD' : 'OVERWRITE_IF_EXISTS_OR_ADD' });
    const config = (mostSpecificWins: boolean) => rc({
      name: '9080',
      most_specific_header_mutations_wins: mostSpecificWins,
      request_headers_to_add: [add('x-level', 'config')],
      virtual_hosts: [{
        name: 'vh', domains: ['svc'],
        request_headers_to_add: [add('x-level', 'vhost'), add('x-vhost', 'v'), add('x-list', 'b', true)],
        request_headers_to_remove: ['x-route-only'],
        routes: [{ match: { prefix: '/' }, route: { cluster: 'c' }, request_headers_to_add: [add('X-Level', 'route'), add('x-route-only', 'r'), add('x-list', 'a', true)] }],
      }],
    });
    const headers = (mostSpecificWins: boolean) => translateRouteConfiguration(config(mostSpecificWins), scope).routes[0]!.route.plugins?.['proxy-rewrite']?.['headers'];
    expect(headers(false)).toEqual({ set: { 'x-level': 'config', 'x-vhost': 'v' }, add: { 'x-list': 'a, b' }, remove: ['x-route-only'] });
    expect(headers(true)).toEqual({ set: { 'x-level': 'route', 'x-vhost': 'v', 'x-route-only': 'r' }, add: { 'x-list': 'b, a' } });
  });
  it('redirects keep the Host as sent and the query string, and rewrite the matched prefix', () => {
    const plugins = (match: object, redirect: object) => routesOf([{ match, redirect }]).routes[0]!.route.plugins;
    expect(plugins({ prefix: '/a' }, { path_redirect: '/b' })).toEqual({ redirect: { uri: '$scheme://$http_host/b', ret_code: 301, append_query_string: true } });
    expect(plugins({ prefix: '/a' }, { path_redirect: '/b?x=1' })?.['redirect']).toEqual({ uri: '$scheme://$http_host/b?x=1', ret_code: 301 });
    expect(plugins({ prefix: '/a' }, { port_redirect: 8443, response_code: 'FOUND' })?.['redirect']).toEqual({ uri: '$scheme://$host:8443$request_uri', ret_code: 302 });
    expect(plugins({ prefix: '/pre/' }, { prefix_rewrite: '/post/' })).toEqual({
      'proxy-rewrite': { regex_uri: ['^\\/pre\\/(.*)', '/post/$1'] },
      redirect: { uri: '$scheme://$http_host$upstream_uri', ret_code: 301 },
    });
    for (const r of routesOf([{ match: { prefix: '/pre/' }, redirect: { prefix_rewrite: '/post/', host_redirect: 'h.example' } }]).routes) expect(validateApisix('route', r.route)).toBeNull();
  });
});

describe('route timeouts', () => {
  it('Istio\'s 0s (no route timeout) leaves the stream idle timeout, not APISIX\'s 60 s default', () => {
    const [none, set] = routesOf([
      { name: 'none', match: { prefix: '/a' }, route: { cluster: 'c', timeout: '0s' } },
      { name: 'set', match: { prefix: '/' }, route: { cluster: 'c', timeout: '2.5s' } },
    ]).routes.map((r) => r.route.timeout);
    expect(none).toEqual({ connect: 300, send: 300, read: 300 });
    expect(set).toEqual({ connect: 2.5, send: 2.5, read: 2.5 });
  });
});

describe('Listener → scopes', () => {
  it('collects RDS names per port and inline configs of the inbound listener', () => {
    const hcm = (extra: object) => ({ name: 'envoy.filters.network.http_connection_manager', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager', stat_prefix: 's', ...extra } });
    const out = translateListener(listener({ name: '0.0.0.0_9080', address: { socket_address: { address: '0.0.0.0', port_value: 9080 } }, filter_chains: [{ filters: [hcm({ rds: { route_config_name: '9080' } })] }] }));
    expect(out.rds).toEqual([{ routeConfigName: '9080', scope: { direction: 'outbound', port: 9080 } }]);
    const inbound = translateListener(listener({
      name: 'virtualInbound', address: { socket_address: { address: '0.0.0.0', port_value: 15006 } },
      filter_chains: [{ filter_chain_match: { destination_port: 9080 }, filters: [hcm({ route_config: { name: 'inbound|9080||', virtual_hosts: [{ name: 'i', domains: ['*'], routes: [{ match: { prefix: '/' }, route: { cluster: 'inbound|9080||' } }] }] } })] }],
    }));
    expect(inbound.inline.map((i) => [i.routeConfig.name, i.scope])).toEqual([['inbound|9080||', { direction: 'inbound', port: 9080 }]]);
    const tcp = translateListener(listener({ name: '10.96.0.10_53', address: { socket_address: { address: '10.96.0.10', port_value: 53 } }, filter_chains: [{ filters: [{ name: 'envoy.filters.network.tcp_proxy', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy', stat_prefix: 'x', cluster: 'outbound|53||kube-dns' } }] }] }));
    // the L4 front dispatches TCP proxies (test/agent/l4-*.test.ts): nothing for the HTTP routes
    expect(tcp).toMatchObject({ rds: [], inline: [], refused: [], notes: [] });
  });
});

describe('whole mesh', () => {
  const base = () => ({
    clusters: new Map([['outbound|80||a', cluster({ name: 'outbound|80||a', type: 'EDS', lb_policy: 'RING_HASH' })]]),
    endpoints: new Map([['outbound|80||a', cla({ cluster_name: 'outbound|80||a', endpoints: [{ lb_endpoints: [ep('10.0.0.1')] }] })]]),
    listeners: new Map([['0.0.0.0_80', listener({ name: '0.0.0.0_80', address: { socket_address: { address: '0.0.0.0', port_value: 80 } }, filter_chains: [{ filters: [{ name: 'hcm', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager', stat_prefix: 's', rds: { route_config_name: '80' } } }] }] })]]),
    routeConfigs: new Map([['80', rc({ name: '80', virtual_hosts: [{ name: 'a', domains: ['a'], routes: [{ match: { prefix: '/' }, route: { cluster: 'outbound|80||a', hash_policy: [{ header: { header_name: 'X-User' } }] } }] }] })]]),
  });
  it('ring hash takes its key from the route hash policy', () => {
    const u = translateMesh(base()).upstreams.get(upstreamId('outbound|80||a'))!;
    expect(u).toMatchObject({ type: 'chash', hash_on: 'header', key: 'x-user' });
    expect(validateApisix('upstream.strict', u)).toBeNull();
  });
  it('an EDS cluster waits for its assignment; a route to it waits too', () => {
    const xds = { ...base(), endpoints: new Map() };
    const out = translateMesh(xds);
    expect(out.upstreams.size).toBe(0);
    expect(out.routes.size).toBe(0);
    expect(out.notes.map((n) => n.reason)).toEqual(expect.arrayContaining(['endpoints-pending', 'cluster-unavailable']));
  });
  it('the cached translator gives the same result as a fresh one after a change', () => {
    const translator = new MeshTranslator();
    const xds = base();
    translator.translate(xds);
    xds.endpoints.set('outbound|80||a', cla({ cluster_name: 'outbound|80||a', endpoints: [{ lb_endpoints: [ep('10.0.0.1'), ep('10.0.0.2')] }] }));
    const cached = translator.translate(xds);
    expect(cached).toEqual(translateMesh(xds));
    expect(cached.upstreams.get(upstreamId('outbound|80||a'))!.nodes).toHaveLength(2);
  });
  it('the cached translator follows a cluster that turns into an original destination and back', () => {
    const translator = new MeshTranslator();
    const xds = base();
    const eds = xds.clusters.get('outbound|80||a')!;
    const steps = [cluster({ name: 'outbound|80||a', type: 'ORIGINAL_DST', lb_policy: 'CLUSTER_PROVIDED' }), eds];
    for (const c of steps) {
      xds.clusters.set('outbound|80||a', c);
      const cached = translator.translate(xds);
      expect(cached).toEqual(translateMesh(xds));
      const [route] = [...cached.routes.values()];
      expect(route!.upstream_id === undefined).toBe(c !== eds);
    }
  });
  it('outbound: virtualOutbound\'s TCP pass-through makes no HTTP route (the L4 front passes its connections through as TCP; HTTP without a route gets 404, as from Envoy)', () => {
    const real = loadXds('istio-sidecar-listeners-configdump.yaml');
    const xds = {
      clusters: new Map([
        ['PassthroughCluster', cluster({ name: 'PassthroughCluster', type: 'ORIGINAL_DST', lb_policy: 'CLUSTER_PROVIDED', connect_timeout: '10s' })],
        ['BlackHoleCluster', cluster({ name: 'BlackHoleCluster', type: 'STATIC' })],
      ]),
      endpoints: new Map(),
      listeners: new Map([['virtualOutbound', real.listeners.get('virtualOutbound')!]]),
      routeConfigs: new Map(),
    };
    expect(translateMesh(xds).routes.size).toBe(0);
  });
  const inboundXds = (virtualInbound: Listener) => ({
    clusters: new Map([
      ['inbound|80||', cluster({ name: 'inbound|80||', type: 'ORIGINAL_DST', lb_policy: 'CLUSTER_PROVIDED', connect_timeout: '10s' })],
      ['InboundPassthroughClusterIpv4', cluster({ name: 'InboundPassthroughClusterIpv4', type: 'ORIGINAL_DST', lb_policy: 'CLUSTER_PROVIDED' })],
    ]),
    endpoints: new Map(),
    listeners: new Map([['virtualInbound', virtualInbound]]),
    routeConfigs: new Map(),
  });
  it('inbound with an AuthorizationPolicy the agent does not enforce: every request is refused, none reaches the app', () => {
    // the fixture's chains carry RBAC (an ALLOW policy on GET /info and POST /data from listed
    // principals), ext_authz, and a network RBAC with no rules (deny all TCP)
    const out = translateMesh(inboundXds(loadXds('istio-sidecar-listeners-configdump.yaml').listeners.get('virtualInbound')!));
    const routes = [...out.routes.values()];
    expect(routes.filter((r) => r.upstream_id || r.plugins?.['apisix-mesh-access'])).toEqual([]);
    expect(routes.map((r) => [r.vars, r.plugins?.['fault-injection']])).toEqual([
      [[['apisix_mesh_direction', '==', 'inbound']], { abort: { http_status: 403, body: expect.stringContaining('refused') } }],
      [[['apisix_mesh_direction', '==', 'inbound'], ['connection_original_dst', '~~', ':80$']], { abort: { http_status: 403, body: expect.stringContaining('refused') } }],
    ]);
    const notes = out.notes.filter((n) => n.reason === 'unenforced-filter');
    expect(notes.map((n) => n.detail)).toEqual([
      // the HTTP RBAC filters are enforced now; ext_authz (CUSTOM) is not; the TCP catch-all's
      // network RBAC is judged by the L4 front (agent/l4/), which the HTTP side sharing its scope cannot
      expect.stringMatching(/^inbound:\*:0: envoy\.filters\.http\.ext_authz .*envoy\.filters\.network\.rbac \([^)]*\) not enforced/),
      expect.stringMatching(/^inbound:\*:80: envoy\.filters\.http\.ext_authz \([^)]*\) not enforced/),
    ]);
    for (const r of routes) expect(validateApisix('route.strict', r)).toBeNull();
  });
  it('inbound under RBAC only (no ext_authz, no network RBAC): every route of the chain carries the policy, pass-through too', () => {
    const real = loadXds('istio-sidecar-listeners-configdump.yaml').listeners.get('virtualInbound')!;
    const rbacOnly = structuredClone(real);
    for (const chain of rbacOnly.filter_chains ?? []) {
      chain.filters = (chain.filters ?? []).filter((f) => f.name !== 'envoy.filters.network.rbac');
      for (const f of chain.filters) {
        const hcm = unpackAny<HttpConnectionManager>(f.typed_config as PackedAny);
        if (!hcm) continue;
        hcm.http_filters = (hcm.http_filters ?? []).filter((h) => !/ext_authz/.test(h.name ?? ''));
        f.typed_config = { type_url: (f.typed_config as PackedAny).type_url, value: encodeMessage((f.typed_config as PackedAny).type_url!, hcm) } as never;
      }
    }
    const xds = inboundXds(rbacOnly);
    const translator = new MeshTranslator();
    const out = translator.translate(xds);
    expect(out.notes.filter((n) => n.reason === 'unenforced-filter')).toEqual([]);
    const routes = [...out.routes.values()];
    expect(routes.length).toBeGreaterThanOrEqual(2);
    for (const r of routes) {
      const rbac = r.plugins?.['apisix-mesh-policy'];
      expect(rbac, r.name).toMatchObject({ rbac: [{ action: 'ALLOW', policies: [expect.objectContaining({ name: 'ns[default]-policy[httpbin]-rule[0]' })] }] });
      expect(validateApisix('route.strict', r)).toBeNull();
    }
    // the pass-through route keeps its original-destination function, in its own plugin and phase
    expect(routes.filter((r) => r.plugins?.['apisix-mesh-access']?.['original_destination']).length).toBeGreaterThan(0);
    for (const r of translator.translate(xds).routes.values()) expect(out.routes.get(r.id)).toBe(r); // cached while the listener is the same
  });
  it('inbound: virtualInbound\'s inline route configuration reaches the app at the address the client dialled, on the inbound listener only', () => {
    // the same listener with only filters that restrict nothing (telemetry, peer metadata, router)
    const real = loadXds('istio-sidecar-listeners-configdump.yaml').listeners.get('virtualInbound')!;
    const withoutPolicy = structuredClone(real);
    for (const chain of withoutPolicy.filter_chains ?? []) {
      chain.filters = (chain.filters ?? []).filter((f) => !/rbac/.test(f.name ?? ''));
      for (const f of chain.filters) {
        const hcm = unpackAny<HttpConnectionManager>(f.typed_config as PackedAny);
        if (!hcm) continue;
        hcm.http_filters = (hcm.http_filters ?? []).filter((h) => !/rbac|ext_authz/.test(h.name ?? ''));
        f.typed_config = { type_url: (f.typed_config as PackedAny).type_url, value: encodeMessage((f.typed_config as PackedAny).type_url!, hcm) } as never;
      }
    }
    const out = translateMesh(inboundXds(withoutPolicy));
    expect(out.notes.filter((n) => n.reason === 'unenforced-filter')).toEqual([]);
    // Envoy's inbound cluster is an original destination: no upstream pinned to one pod address
    expect(out.upstreams.get(upstreamId('inbound|80||'))).toBeUndefined();
    const routes = [...out.routes.values()];
    expect(routes.filter((r) => r.upstream_id)).toEqual([]);
    const toApp = routes.filter((r) => r.vars?.some((v) => v[0] === 'connection_original_dst' && v[2] === ':80$'));
    expect(toApp).toHaveLength(1);
    expect(toApp[0]!.vars).toContainEqual(['apisix_mesh_direction', '==', 'inbound']);
    // the catch-all HTTP chain: any other port of the pod
    const catchAll = routes.filter((r) => r !== toApp[0]);
    expect(catchAll.length).toBeGreaterThan(0);
    for (const r of [...toApp, ...catchAll]) {
      expect(Object.keys(r.plugins?.['apisix-mesh-access'] ?? {})).toEqual(['original_destination']);
      expect(r.vars).toContainEqual(['apisix_mesh_direction', '==', 'inbound']);
    }
    for (const r of catchAll) expect(r.priority).toBeLessThan(toApp[0]!.priority);
    for (const r of routes) expect(validateApisix('route.strict', r)).toBeNull();
  });
});
