// Synthetic meshes in istiod's shapes and a minimal ADS server that serves them, shared by the
// agent and etcd benches (not a bench itself: bench.mjs runs only scripts/bench-*.mjs).
import * as grpc from '@grpc/grpc-js';
import { encodeCanonical } from '../dist/agent/xds/codec.js';
import { envoyRoot, TYPE_URL } from '../dist/agent/xds/protos.js';

// Service i: host svc-i.ns-(i mod 50).svc.cluster.local, VIP 10.96.(i>>8).(i&255), endpoints
// 10.(i>>8).(i&255).1-3:8080 (serviceHost / serviceVip / endpointIp, for benches that send traffic).
export const serviceHost = (i) => `svc-${i}.ns-${i % 50}.svc.cluster.local`;
export const serviceVip = (i) => `10.96.${(i >> 8) & 255}.${i & 255}`;
export const endpointIp = (i, k) => `10.${(i >> 8) & 255}.${i & 255}.${k + 1}`;

/** `changed`: every cluster and endpoint differs from mesh(n)'s (a reconnect to a changed mesh) */
export function mesh(n, changed = 0) {
  const clusters = [], endpoints = [], vhosts = [];
  for (let i = 0; i < n; i++) {
    const host = serviceHost(i);
    const name = `outbound|80||${host}`;
    clusters.push({ name, type: 'EDS', eds_cluster_config: { eds_config: { ads: {}, resource_api_version: 'V3' }, service_name: name }, connect_timeout: `${10 + changed}s`, lb_policy: 'LEAST_REQUEST',
      circuit_breakers: { thresholds: [{ max_connections: 4294967295, max_pending_requests: 4294967295, max_requests: 4294967295, max_retries: 4294967295, track_remaining: true }] },
      common_lb_config: { locality_weighted_lb_config: {} },
      metadata: { filter_metadata: { istio: { services: [{ host, name: `svc-${i}`, namespace: `ns-${i % 50}` }] } } } });
    endpoints.push(cla(name, i, 3, changed));
    vhosts.push({ name: `${host}:80`, domains: [host, `${host}.`, `svc-${i}.ns-${i % 50}`, `svc-${i}.ns-${i % 50}.svc`, serviceVip(i)],
      routes: [{ name: 'default', match: { prefix: '/' }, route: { cluster: name, timeout: '0s', retry_policy: { retry_on: 'connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes', num_retries: 2, host_selection_retry_max_attempts: '5' }, max_grpc_timeout: '0s' } }] });
  }
  vhosts.push({ name: 'allow_any', domains: ['*'], routes: [{ name: 'allow_any', match: { prefix: '/' }, route: { cluster: 'PassthroughCluster', timeout: '0s' } }] });
  clusters.push({ name: 'PassthroughCluster', type: 'ORIGINAL_DST', lb_policy: 'CLUSTER_PROVIDED', connect_timeout: '10s' });
  const listener = { name: '0.0.0.0_80', address: { socket_address: { address: '0.0.0.0', port_value: 80 } }, traffic_direction: 'OUTBOUND', bind_to_port: false,
    filter_chains: [{ filters: [{ name: 'envoy.filters.network.http_connection_manager', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager', stat_prefix: 'outbound_0.0.0.0_80', rds: { config_source: { ads: {} }, route_config_name: '80' } } }] }] };
  return { cluster: clusters, endpoint: endpoints, listener: [listener], route: [{ name: '80', virtual_hosts: vhosts, validate_clusters: false, ignore_port_in_host_matching: true }] };
}

export function cla(name, i, count, extra = 0) {
  const lb = [];
  // BENCH_ENDPOINT_METADATA=1: each endpoint with the telemetry metadata istiod writes for a pod (`istio.workload`)
  const metadata = process.env.BENCH_ENDPOINT_METADATA === '1' ? { metadata: { filter_metadata: { istio: { workload: `svc-${i}-v1;ns-${i % 50};svc-${i};v1;Kubernetes` } } } } : {};
  for (let k = 0; k < count; k++) lb.push({ endpoint: { address: { socket_address: { address: endpointIp(i, k + extra), port_value: 8080 } } }, health_status: 'HEALTHY', load_balancing_weight: 1, ...metadata });
  return { cluster_name: name, endpoints: [{ locality: { region: 'r', zone: 'z' }, lb_endpoints: lb, load_balancing_weight: count }] };
}

/** the mesh as istiod puts it on the wire: protobuf bytes per resource */
export function encodeAll(m) {
  const out = {};
  for (const kind of ['cluster', 'endpoint', 'listener', 'route']) out[kind] = m[kind].map((r) => encodeCanonical(TYPE_URL[kind], r));
  return out;
}

/**
 * A minimal ADS server (state of the world): answers each subscription with `bytes`, `push` sends
 * more; `reconnect` ends every stream (the clients reconnect) and serves `next` from then on.
 */
export async function adsServer(bytes) {
  const root = envoyRoot();
  const Req = root.lookupType('envoy.service.discovery.v3.DiscoveryRequest');
  const Res = root.lookupType('envoy.service.discovery.v3.DiscoveryResponse');
  const kinds = { [TYPE_URL.cluster]: 'cluster', [TYPE_URL.endpoint]: 'endpoint', [TYPE_URL.listener]: 'listener', [TYPE_URL.route]: 'route' };
  const streams = new Set();
  let version = 0;
  const respond = (call, typeUrl, list) => {
    version++;
    call.write(Res.encode(Res.fromObject({ version_info: String(version), type_url: typeUrl, nonce: `n${version}`, resources: list.map((value) => ({ type_url: typeUrl, value })) })).finish());
  };
  const server = new grpc.Server({ 'grpc.max_send_message_length': -1 });
  server.addService({ StreamAggregatedResources: { path: '/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources', requestStream: true, responseStream: true,
    requestSerialize: (v) => Buffer.from(Req.encode(v).finish()), requestDeserialize: (b) => Req.toObject(Req.decode(b)),
    responseSerialize: (v) => Buffer.from(v), responseDeserialize: (b) => b } },
  { StreamAggregatedResources: (call) => {
    streams.add(call);
    call.on('data', (req) => { if (!req.responseNonce && !req.response_nonce) respond(call, req.typeUrl ?? req.type_url, bytes[kinds[req.typeUrl ?? req.type_url]]); });
    call.on('end', () => { streams.delete(call); call.end(); });
    call.on('error', () => streams.delete(call));
  } });
  const port = await new Promise((res, rej) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
  const reconnect = (next) => {
    bytes = next;
    for (const c of streams) c.end();
    streams.clear();
  };
  return { port, push: (typeUrl, list) => { for (const c of streams) respond(c, typeUrl, list); }, reconnect, stop: () => server.forceShutdown() };
}

