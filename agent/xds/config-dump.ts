import { TYPE_URL, type XdsKind } from './protos.js';

/**
 * Resources in proto3 canonical JSON, grouped by xDS type, as istiod sent them. Read from an Envoy
 * `/config_dump` (only the dynamic, istiod-sent parts: static ones came from the bootstrap) or from
 * a list of DiscoveryResponses in JSON.
 */
export type CanonicalResources = Record<XdsKind, Array<Record<string, unknown>>>;

type Json = Record<string, unknown>;

export function emptyResources(): CanonicalResources {
  return { cluster: [], endpoint: [], listener: [], route: [] };
}

const KIND_BY_URL = new Map<string, XdsKind>(Object.entries(TYPE_URL).map(([k, v]) => [v, k as XdsKind]));

export function kindOfTypeUrl(typeUrl: string): XdsKind | undefined {
  return KIND_BY_URL.get(typeUrl);
}

/** An Envoy admin config dump (`{"configs": [...]}`). */
export function resourcesFromConfigDump(dump: Json): CanonicalResources {
  const out = emptyResources();
  for (const config of (dump['configs'] as Json[] | undefined) ?? []) {
    const type = String(config['@type'] ?? '');
    if (type.endsWith('ClustersConfigDump')) {
      for (const c of (config['dynamic_active_clusters'] as Json[] | undefined) ?? []) out.cluster.push(c['cluster'] as Json);
    } else if (type.endsWith('EndpointsConfigDump')) {
      for (const e of (config['dynamic_endpoint_configs'] as Json[] | undefined) ?? []) out.endpoint.push(e['endpoint_config'] as Json);
    } else if (type.endsWith('ListenersConfigDump')) {
      for (const l of (config['dynamic_listeners'] as Json[] | undefined) ?? []) {
        const active = (l['active_state'] as Json | undefined)?.['listener'] as Json | undefined;
        if (active) out.listener.push(active);
      }
    } else if (type.endsWith('RoutesConfigDump')) {
      for (const r of (config['dynamic_route_configs'] as Json[] | undefined) ?? []) out.route.push(r['route_config'] as Json);
    }
  }
  for (const list of Object.values(out)) for (const r of list) delete r['@type'];
  return out;
}

/** DiscoveryResponses as JSON (`{"responses": [...]}` or a single response with `resources`). */
export function resourcesFromResponses(doc: Json): CanonicalResources {
  const out = emptyResources();
  const responses = (doc['responses'] as Json[] | undefined) ?? [doc];
  for (const response of responses) {
    for (const resource of ((response['resources'] as Json[] | undefined) ?? [])) {
      const { '@type': typeUrl, ...rest } = resource;
      const kind = kindOfTypeUrl(String(typeUrl ?? response['type_url'] ?? response['typeUrl'] ?? ''));
      if (kind) out[kind].push(rest);
    }
  }
  return out;
}

/** Either format. */
export function resourcesFromJson(doc: Json): CanonicalResources {
  return 'configs' in doc ? resourcesFromConfigDump(doc) : resourcesFromResponses(doc);
}

export function resourceName(kind: XdsKind, resource: Json): string {
  return String(kind === 'endpoint' ? resource['cluster_name'] ?? resource['clusterName'] ?? '' : resource['name'] ?? '');
}
