import type { ApisixRoute } from './apisix-types.js';
import type { CapturePorts } from './route-configuration.js';
import { ACCESS_PHASE_PLUGIN, withAccessPhase } from './access-phase.js';

/**
 * Routes to Envoy's original-destination clusters (Istio's `PassthroughCluster` behind the
 * `allow_any` route, `InboundPassthroughCluster*` behind the inbound catch-all) forward each request
 * to the address the app dialled. An APISIX upstream only holds fixed nodes, so the route carries a
 * `serverless-pre-function` that, in the access phase, sets the request's upstream to
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
}

/**
 * The Lua function (one chunk returning a function, as the serverless plugin requires). A
 * destination on one of the capture ports is refused: forwarding there would loop into APISIX
 * (Istio's `virtualOutbound-blackhole` does the same for 15001). Numbers are interpolated as
 * numbers only; nothing from xDS reaches the code as text.
 */
export function originalDestinationLua(options: OriginalDestinationOptions): string {
  const { outbound, inbound } = options.ports;
  const connect = finite(options.connectTimeout);
  // one cached upstream per key: a destination reached by both schemes needs two
  const key = options.scheme === 'grpc' ? 'passthrough-grpc#' : 'passthrough#';
  const scheme = options.scheme === 'grpc' ? 'grpc' : 'http';
  // APISIX takes the scheme from the route's own upstream only (set_by_route); nginx's gRPC proxy
  // is chosen by ctx.upstream_scheme
  const setScheme = options.scheme === 'grpc' ? '\n  require("apisix.upstream").set_scheme(ctx, ctx.upstream_conf)' : '';
  return `return function(conf, ctx)
  local core = require("apisix.core")
  local dst = ctx.var.connection_original_dst
  local host, port
  if dst then
    host, port = string.match(dst, "^%[?([^%]]+)%]?:(%d+)$")
    port = tonumber(port)
  end
  if not host or not port or port == ${outbound} or port == ${inbound} then
    core.log.warn("apisix-mesh: no original destination to pass through to: ", dst)
    return core.response.exit(502)
  end
  require("apisix.upstream").set(ctx, "${key}" .. dst, ctx.conf_version, {
    type = "roundrobin",
    scheme = "${scheme}",
    pass_host = "pass",
    nodes = {{host = host, port = port, weight = 1, priority = 0}},
    timeout = {connect = ${connect}, send = ${PASSTHROUGH_IO_TIMEOUT}, read = ${PASSTHROUGH_IO_TIMEOUT}},
    parent = ctx.matched_route,
  })${setScheme}
end
`;
}

/**
 * The route without a stored upstream, forwarding to the original destination instead. The
 * function comes before the route's own access-phase Lua (a mirror, the retry hand-over), which
 * needs the upstream chosen.
 */
export function originalDestinationRoute(route: ApisixRoute, options: OriginalDestinationOptions): ApisixRoute {
  const { upstream_id: _stored, ...rest } = route;
  if (!rest.plugins?.[ORIGINAL_DESTINATION_PLUGIN]) {
    return { ...rest, plugins: { ...(rest.plugins ?? {}), [ORIGINAL_DESTINATION_PLUGIN]: { phase: 'access', functions: [originalDestinationLua(options)] } } };
  }
  return { ...rest, plugins: withAccessPhase(rest.plugins, [originalDestinationLua(options)], 'first') };
}

function finite(seconds: number): number {
  if (!Number.isFinite(seconds) || seconds <= 0) throw new RangeError(`connect timeout must be a positive number of seconds, got ${seconds}`);
  return seconds;
}
