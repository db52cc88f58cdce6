import type { LbEndpoint } from '../xds/envoy-types.js';

/**
 * The workload istiod names on each endpoint it sends (`filter_metadata.istio.workload`,
 * `<workload>;<namespace>;<canonical service>;<canonical revision>;<cluster>`): Envoy's stats plugin
 * reads the destination's workload labels from it when the destination did not answer with Istio's
 * metadata exchange (a peer without a sidecar, or a TCP connection). Kept on the APISIX node as
 * `metadata.istio_workload` for the sidecar's Lua (agent/l4/lua/apisix_mesh/endpoint_workload.lua).
 * Hostile input: at most 1,024 printable ASCII characters without spaces, else left out.
 */
const WORKLOAD = /^[!-~]{1,1024}$/;

interface StructLike {
  fields?: Record<string, { stringValue?: string } | undefined>;
}

export function endpointWorkload(endpoint: LbEndpoint): string | undefined {
  const istio = (endpoint.metadata?.filter_metadata as Record<string, StructLike | undefined> | undefined)?.['istio'];
  const value = istio?.fields?.['workload']?.stringValue;
  return typeof value === 'string' && WORKLOAD.test(value) ? value : undefined;
}
