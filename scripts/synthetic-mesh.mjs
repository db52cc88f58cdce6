// A synthetic mesh in istiod's shapes (proto3 canonical JSON), shared by the benches that need a
// mesh of n services: per service one EDS cluster with 3 endpoints and one virtual host with a
// retrying default route, all on port 80 like a real sidecar's RDS "80", plus the pass-through.
// Service i: host svc-i.ns-(i mod 50).svc.cluster.local, VIP 10.96.(i>>8).(i&255), endpoints
// 10.(i>>8).(i&255).1-3:8080 (see serviceVip / endpointIp).

export const serviceHost = (i) => `svc-${i}.ns-${i % 50}.svc.cluster.local`;
export const serviceVip = (i) => `10.96.${(i >> 8) & 255}.${i & 255}`;
export const endpointIp = (i, k) => `10.${(i >> 8) & 255}.${i & 255}.${k + 1}`;

export function mesh(n) {
  const clusters = [], endpoints = [], vhosts = [];
  for (let i = 0; i < n; i++) {
    const host = serviceHost(i);
    const name = `outbound|80||${host}`;
    clusters.push({ name, type: 'EDS', eds_cluster_config: { eds_config: { ads: {}, resource_api_version: 'V3' }, service_name: name }, connect_timeout: '10s', lb_policy: 'LEAST_REQUEST',
      circuit_breakers: { thresholds: [{ max_connections: 4294967295, max_pending_requests: 4294967295, max_requests: 4294967295, max_retries: 4294967295, track_remaining: true }] },
      common_lb_config: { locality_weighted_lb_config: {} },
      metadata: { filter_metadata: { istio: { services: [{ host, name: `svc-${i}`, namespace: `ns-${i % 50}` }] } } } });
    endpoints.push(cla(name, i, 3));
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
  for (let k = 0; k < count; k++) lb.push({ endpoint: { address: { socket_address: { address: endpointIp(i, k + extra), port_value: 8080 } } }, health_status: 'HEALTHY', load_balancing_weight: 1 });
  return { cluster_name: name, endpoints: [{ locality: { region: 'r', zone: 'z' }, lb_endpoints: lb, load_balancing_weight: count }] };
}

