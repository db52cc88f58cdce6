import type { Cluster } from '../xds/envoy-types.js';

/**
 * The service an inbound cluster serves, as istiod writes it in the cluster's metadata
 * (`filter_metadata.istio.services`, each `{host, name, namespace}`): Istio's destination reporter
 * takes its `destination_service*` labels from it. The sidecar's Lua reads it from the upstream's
 * labels (agent/l4/lua/apisix_mesh/istio_metrics.lua). Only the first service: a port that several
 * services select reports the first, where Istio would pick the one the Host header names.
 */
export interface IstioService {
  host: string;
  name?: string;
  namespace?: string;
}

/** APISIX's label values: no white space, 1-256 characters. */
const LABEL_VALUE = /^\S{1,256}$/;

/** protobufjs's object form of google.protobuf.Struct / Value (as the xDS decoder gives them). */
interface StructValue {
  stringValue?: string;
  structValue?: { fields?: Record<string, StructValue | undefined> };
  listValue?: { values?: Array<StructValue | undefined> };
}

export function firstIstioService(metadata: Cluster['metadata']): IstioService | undefined {
  const istio = (metadata?.filter_metadata as Record<string, { fields?: Record<string, StructValue | undefined> } | undefined> | undefined)?.['istio'];
  const first = istio?.fields?.['services']?.listValue?.values?.[0]?.structValue?.fields;
  const text = (key: string) => {
    const v = first?.[key]?.stringValue;
    return typeof v === 'string' && LABEL_VALUE.test(v) ? v : undefined;
  };
  const host = text('host');
  if (!host) return undefined;
  const name = text('name');
  const namespace = text('namespace');
  return { host, ...(name ? { name } : {}), ...(namespace ? { namespace } : {}) };
}

/** The upstream labels the Lua reads: `istio-service`, `istio-service-name`, `istio-service-namespace`. */
export function serviceLabels(service: IstioService | undefined): Record<string, string> | undefined {
  if (!service) return undefined;
  return {
    'istio-service': service.host,
    ...(service.name ? { 'istio-service-name': service.name } : {}),
    ...(service.namespace ? { 'istio-service-namespace': service.namespace } : {}),
  };
}
