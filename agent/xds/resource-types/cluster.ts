import type { Cluster } from '../envoy-types.js';
import { nameRejection } from './names.js';
import { resourceType } from './resource-type.js';

/** CDS: the complete set of clusters in every response. */
export const clusterResourceType = resourceType<Cluster>({
  kind: 'cluster',
  allResourcesRequiredInSotW: true,
  nameField: 1,
  nameOf: (c) => c.name,
  validate(cluster) {
    const problems: string[] = [];
    // the EDS name the agent subscribes to for this cluster
    const service = cluster.eds_cluster_config?.service_name;
    if (service) {
      const refused = nameRejection(service);
      if (refused) problems.push(`eds_cluster_config.service_name: ${refused}`);
    }
    return problems;
  },
  // istiod's per-service metadata (a protobuf Struct: ~40 objects per cluster decoded, half a
  // cluster's memory): dropped, but for an inbound cluster's first service (one cluster per app
  // port), which names the destination service in Istio's metrics (translate/cluster-service.ts)
  retain: ({ metadata, ...kept }) => (kept.name?.startsWith('inbound|') && metadata ? { ...kept, metadata } : kept),
});

/** The EDS names a set of clusters needs (its service name, or the cluster's own name). */
export function edsServiceNames(clusters: Iterable<Cluster>): string[] {
  const names: string[] = [];
  for (const c of clusters) if (c.type === 'EDS') names.push(c.eds_cluster_config?.service_name || c.name || '');
  return names.filter(Boolean);
}
