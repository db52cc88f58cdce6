import type { ClusterLoadAssignment } from '../envoy-types.js';
import { resourceType } from './resource-type.js';
import { TRANSPORT_SOCKET_MATCH } from '../../mtls/upstream-tls.js';

/** EDS: assignments by name, merged into what was held. */
export const endpointResourceType = resourceType<ClusterLoadAssignment>({
  kind: 'endpoint',
  allResourcesRequiredInSotW: false,
  nameField: 1,
  nameOf: (cla) => cla.cluster_name,
  validate: () => [],
  // istiod's per-endpoint metadata (workload name, TLS mode as protobuf Structs), several endpoints per
  // service: only the namespace `transport_socket_matches` compare against is read (auto-mTLS's
  // `tlsMode`, agent/mtls/upstream-tls.ts); the rest is dropped.
  retain(cla) {
    for (const locality of cla.endpoints ?? []) {
      for (const lb of locality.lb_endpoints ?? []) {
        const match = (lb.metadata?.filter_metadata as Record<string, unknown> | undefined)?.[TRANSPORT_SOCKET_MATCH];
        if (match) (lb as { metadata?: unknown }).metadata = { filter_metadata: { [TRANSPORT_SOCKET_MATCH]: match } };
        else delete (lb as { metadata?: unknown }).metadata;
      }
    }
    return cla;
  },
});
