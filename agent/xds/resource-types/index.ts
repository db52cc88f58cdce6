import type { XdsKind } from '../protos.js';
import type { XdsResourceType } from './resource-type.js';
import { clusterResourceType } from './cluster.js';
import { endpointResourceType } from './endpoint.js';
import { listenerResourceType } from './listener.js';
import { routeConfigurationResourceType } from './route-configuration.js';

export type { DecodeResult, XdsResourceType } from './resource-type.js';
export { edsServiceNames } from './cluster.js';
export { listenerRouteConfigNames, httpConnectionManagers } from './listener.js';

/** The four resource types of the agent's ADS stream. */
export const RESOURCE_TYPES: Readonly<Record<XdsKind, XdsResourceType<unknown>>> = {
  cluster: clusterResourceType,
  endpoint: endpointResourceType,
  listener: listenerResourceType,
  route: routeConfigurationResourceType,
};
