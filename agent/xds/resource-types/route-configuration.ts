import type { RouteConfiguration } from '../envoy-types.js';
import { resourceType } from './resource-type.js';

/** RDS: route configurations by name, merged into what was held. */
export const routeConfigurationResourceType = resourceType<RouteConfiguration>({
  kind: 'route',
  allResourcesRequiredInSotW: false,
  nameField: 1,
  nameOf: (rc) => rc.name,
  validate: (rc) => duplicateDomains(rc),
});

/** Envoy refuses a route configuration in which two virtual hosts claim the same domain. */
function duplicateDomains(rc: RouteConfiguration): string[] {
  const seen = new Set<string>();
  for (const vhost of rc.virtual_hosts ?? []) {
    for (const domain of vhost.domains ?? []) {
      const key = domain.toLowerCase();
      if (seen.has(key)) return [`virtual_hosts: domain ${JSON.stringify(domain.slice(0, 60))} appears twice`];
      seen.add(key);
    }
  }
  return [];
}
