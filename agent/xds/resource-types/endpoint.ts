import type { ClusterLoadAssignment } from '../envoy-types.js';
import { resourceType } from './resource-type.js';

/** EDS: assignments by name, merged into what was held. */
export const endpointResourceType = resourceType<ClusterLoadAssignment>({
  kind: 'endpoint',
  allResourcesRequiredInSotW: false,
  nameField: 1,
  nameOf: (cla) => cla.cluster_name,
  validate: () => [],
});
