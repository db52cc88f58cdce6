import type { ApisixRoute } from './apisix-types.js';
import type { IstioService } from './cluster-service.js';
import type { CapturePorts } from './route-configuration.js';
import { ACCESS_PHASE_PLUGIN, withAccessPhase, type AccessPhaseConf } from './access-phase.js';

/**
 * Routes to Envoy's original-destination clusters (Istio's `PassthroughCluster` behind the
 * `allow_any` route, `InboundPassthroughCluster*` behind the inbound catch-all) forward each request
 * to the address the app dialled. An APISIX upstream only holds fixed nodes, so the route's
 * apisix-mesh-access plugin (access-phase.ts), in the access phase, sets the request's upstream to
 * `connection_original_dst` (the captured connection's original destination, from the L4 front) the way
 * APISIX's own traffic-split sets a per-request upstream (`apisix.upstream`.set; `set_by_route` then
 * keeps it). Inbound forwards leave from the passthrough source through the sidecar's nginx snippet.
 */
export const ORIGINAL_DESTINATION_PLUGIN = ACCESS_PHASE_PLUGIN;

/** How long an idle pass-through request may wait for bytes: Envoy's default stream idle timeout. */
export const PASSTHROUGH_IO_TIMEOUT = 300;

export interface OriginalDestinationOptions {
  ports: CapturePorts;
  /** the original-destination cluster's connect timeout, seconds */
  connectTimeout: number;
  /** `grpc`: HTTP/2 to the destination (an inbound gRPC port); default HTTP/1.1 */
  scheme?: 'grpc';
  /** the service an inbound cluster serves: Istio's metrics report it as the destination */
  service?: IstioService;
}

/**
 * The plugin configuration that forwards to the original destination (agent/l4/lua/apisix_mesh/
 * http_passthrough.lua). A destination on one of the capture ports is refused there: forwarding
 * would loop into APISIX (Istio's `virtualOutbound-blackhole` does the same for 15001).
 */
export function originalDestinationConf(options: OriginalDestinationOptions): NonNullable<AccessPhaseConf['original_destination']> {
  const { outbound, inbound } = options.ports;
  // `grpc`: nginx's gRPC proxy to the destination (APISIX takes the scheme from a route's own
  // upstream only, so the plugin sets it for the per-request one)
  return {
    capture_ports: [outbound, inbound],
    connect_timeout: finite(options.connectTimeout),
    io_timeout: PASSTHROUGH_IO_TIMEOUT,
    ...(options.scheme === 'grpc' ? { scheme: 'grpc' as const } : {}),
    ...(options.service ? { service: options.service } : {}),
  };
}

/**
 * The route without a stored upstream, forwarding to the original destination instead; the plugin
 * does that before the route's other access-phase work (a mirror, the retry hand-over), which
 * needs the upstream chosen.
 */
export function originalDestinationRoute(route: ApisixRoute, options: OriginalDestinationOptions): ApisixRoute {
  const { upstream_id: _stored, ...rest } = route;
  return { ...rest, plugins: withAccessPhase(rest.plugins ?? {}, { original_destination: originalDestinationConf(options) }) };
}

function finite(seconds: number): number {
  if (!Number.isFinite(seconds) || seconds <= 0) throw new RangeError(`connect timeout must be a positive number of seconds, got ${seconds}`);
  return seconds;
}
