import type { HttpConnectionManager, Listener } from '../envoy-types.js';
import { unpackAny, type PackedAny } from '../codec.js';
import { nameRejection } from './names.js';
import { resourceType } from './resource-type.js';
import { HCM_TYPE } from '../protos.js';


/** LDS: the complete set of listeners in every response. */
export const listenerResourceType = resourceType<Listener>({
  kind: 'listener',
  allResourcesRequiredInSotW: true,
  nameField: 1,
  nameOf: (l) => l.name,
  validate(listener) {
    const problems: string[] = [];
    for (const name of listenerRouteConfigNames(listener)) {
      const refused = nameRejection(name);
      if (refused) problems.push(`rds.route_config_name: ${refused}`);
    }
    return problems;
  },
});

/** The HTTP connection managers of a listener's filter chains (default chain last). */
export function httpConnectionManagers(listener: Listener): HttpConnectionManager[] {
  const out: HttpConnectionManager[] = [];
  const chains = [...(listener.filter_chains ?? []), ...(listener.default_filter_chain ? [listener.default_filter_chain] : [])];
  for (const chain of chains) {
    for (const filter of chain.filters ?? []) {
      const typed = filter.typed_config as PackedAny | undefined;
      if (typed?.type_url !== HCM_TYPE) continue;
      const hcm = unpackAny<HttpConnectionManager>(typed);
      if (hcm) out.push(hcm);
    }
  }
  return out;
}

/** The RDS names a listener needs. */
export function listenerRouteConfigNames(listener: Listener): string[] {
  return httpConnectionManagers(listener).map((hcm) => hcm.rds?.route_config_name ?? '').filter(Boolean);
}
