import type { CanonicalResources } from '../../agent/xds/config-dump.js';

/** The reviews v1 cluster (and its assignment) of synthetic-reviews-xds-responses.json. */
export const V1 = 'outbound|9080|v1|reviews.default.svc.cluster.local';

/**
 * The synthetic fixture plus the nested typed configs whose corruption used to crash the agent or
 * pass silently: HttpProtocolOptions on a cluster (read by translateCluster) and a fault filter
 * config on a route (read by the route translation). The listener already carries its HTTP
 * connection manager as a typed config.
 */
export function withNestedConfigs(resources: CanonicalResources): CanonicalResources {
  const out = structuredClone(resources);
  const cluster = out.cluster.find((c) => c['name'] === V1)!;
  cluster['typed_extension_protocol_options'] = {
    'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': {
      '@type': 'type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions',
      explicit_http_config: { http_protocol_options: {} },
    },
  };
  const rc = out.route.find((r) => r['name'] === '9080') as { virtual_hosts: Array<{ routes: Array<Record<string, unknown>> }> };
  rc.virtual_hosts[0]!.routes[0]!['typed_per_filter_config'] = {
    'envoy.filters.http.fault': {
      '@type': 'type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault',
      abort: { http_status: 503, percentage: { numerator: 10, denominator: 'HUNDRED' } },
      delay: { fixed_delay: '0.5s', percentage: { numerator: 5 } },
    },
  };
  return out;
}
