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
  // service: only what is read is kept, the namespace `transport_socket_matches` compare against
  // (auto-mTLS's `tlsMode`, agent/mtls/upstream-tls.ts) and the `istio` namespace's `workload` string
  // (Istio's metrics, agent/translate/endpoint-workload.ts); the rest is dropped.
  retain(cla) {
    for (const locality of cla.endpoints ?? []) {
      for (const lb of locality.lb_endpoints ?? []) {
        const filter = lb.metadata?.filter_metadata as Record<string, { fields?: Record<string, unknown> } | undefined> | undefined;
        const match = filter?.[TRANSPORT_SOCKET_MATCH];
        const workload = filter?.['istio']?.fields?.['workload'];
        const kept = { ...(match ? { [TRANSPORT_SOCKET_MATCH]: match } : {}), ...(workload ? { istio: { fields: { workload } } } : {}) };
        if (match || workload) (lb as { metadata?: unknown }).metadata = { filter_metadata: kept };
        else delete (lb as { metadata?: unknown }).metadata;
      }
    }
    return cla;
  },
});
