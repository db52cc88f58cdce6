// istiod's per-endpoint telemetry metadata (`filter_metadata.istio.workload`) through the agent: kept
// when EDS is retained, carried onto the APISIX node for Istio's metrics, hostile values left out.
import { describe, expect, it } from 'vitest';
import { encodeCanonical } from '../../agent/xds/codec.js';
import { endpointResourceType } from '../../agent/xds/resource-types/endpoint.js';
import { translateClusterLoadAssignment } from '../../agent/translate/endpoints.js';
import type { ClusterLoadAssignment } from '../../agent/xds/envoy-types.js';

const CLA = 'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment';

function assignment(endpoints: Array<{ ip: string; istio?: Record<string, unknown>; tlsMode?: string }>): ClusterLoadAssignment {
  const json = {
    cluster_name: 'outbound|80||ratings.shop.svc.cluster.local',
    endpoints: [{
      locality: {},
      lb_endpoints: endpoints.map((e) => ({
        endpoint: { address: { socket_address: { address: e.ip, port_value: 9080 } } },
        metadata: { filter_metadata: { ...(e.istio ? { istio: e.istio } : {}), ...(e.tlsMode ? { 'envoy.transport_socket_match': { tlsMode: e.tlsMode } } : {}) } },
      })),
    }],
  };
  // as the agent holds it: decoded from the wire, validated, then retained
  const decoded = endpointResourceType.decode(encodeCanonical(CLA, json));
  if (!('value' in decoded) || !decoded.value) throw new Error(`refused: ${JSON.stringify(decoded)}`);
  return decoded.value;
}

describe('istiod\'s endpoint workload metadata', () => {
  it('is kept through EDS (with the TLS mode, without the rest) onto the node', () => {
    const cla = assignment([
      { ip: '10.0.0.1', istio: { workload: 'ratings-v1;shop;ratings;v1;Kubernetes', uid: 'kubernetes://ratings-v1-abc.shop' }, tlsMode: 'istio' },
      { ip: '10.0.0.2' },
    ]);
    expect(cla.endpoints![0]!.lb_endpoints![0]!.metadata).toEqual({
      filter_metadata: {
        'envoy.transport_socket_match': expect.anything(),
        istio: { fields: { workload: expect.objectContaining({ stringValue: 'ratings-v1;shop;ratings;v1;Kubernetes' }) } },
      },
    });
    expect(translateClusterLoadAssignment(cla).nodes).toEqual([
      { host: '10.0.0.1', port: 9080, weight: 1, metadata: { istio_workload: 'ratings-v1;shop;ratings;v1;Kubernetes' } },
      { host: '10.0.0.2', port: 9080, weight: 1 },
    ]);
  });

  it('hostile values are left out: too long, spaces or control characters, not a string', () => {
    const nodes = translateClusterLoadAssignment(assignment([
      { ip: '10.0.0.1', istio: { workload: `a;b;c;d;${'x'.repeat(1100)}` } },
      { ip: '10.0.0.2', istio: { workload: 'a b;ns;c;d;e' } },
      { ip: '10.0.0.3', istio: { workload: 'a;ns;c;d;e\n' } },
      { ip: '10.0.0.4', istio: { workload: 42 } },
      { ip: '10.0.0.5', istio: { workload: { nested: 'a;b;c;d;e' } } },
    ])).nodes;
    expect(nodes.map((n) => n.metadata)).toEqual([undefined, undefined, undefined, undefined, undefined]);
  });
});
