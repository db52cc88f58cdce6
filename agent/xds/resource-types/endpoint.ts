import type { ClusterLoadAssignment } from '../envoy-types.js';
import { resourceType } from './resource-type.js';

/** EDS: assignments by name, merged into what was held. */
export const endpointResourceType = resourceType<ClusterLoadAssignment>({
  kind: 'endpoint',
  allResourcesRequiredInSotW: false,
  nameField: 1,
  nameOf: (cla) => cla.cluster_name,
  validate: () => [],
  // istiod's per-endpoint metadata (workload name, TLS mode as protobuf Structs): the translation
  // never reads it, and there are several endpoints per service.
  retain(cla) {
    for (const locality of cla.endpoints ?? []) {
      for (const lb of locality.lb_endpoints ?? []) delete (lb as { metadata?: unknown }).metadata;
    }
    return cla;
  },
});
