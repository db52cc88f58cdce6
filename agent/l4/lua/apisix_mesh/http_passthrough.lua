-- A route to Envoy's original-destination clusters (Istio's PassthroughCluster, the inbound
-- catch-all's InboundPassthroughCluster) forwards each request to the address the app dialled
-- (agent/translate/original-destination.ts). An APISIX upstream only holds fixed nodes, so the
-- request's upstream is set here, in the access phase, to `connection_original_dst` (the captured
-- connection's original destination, from the L4 front) the way APISIX's own traffic-split sets a
-- per-request upstream (`apisix.upstream`.set; `set_by_route` then keeps it). A destination on a
-- capture port is refused: forwarding there would loop into APISIX (Istio's
-- `virtualOutbound-blackhole` does the same for 15001).
local core = require("apisix.core")
local upstream = require("apisix.upstream")
local match, tonumber = string.match, tonumber

local _M = {}

-- conf: { capture_ports = { outbound, inbound }, connect_timeout = s, io_timeout = s,
--         scheme = "grpc" (an inbound gRPC port: HTTP/2 to the destination) or absent,
--         service = { host, name, namespace } (an inbound cluster's service, for Istio's metrics) }
function _M.forward(conf, ctx)
    local dst = ctx.var.connection_original_dst
    local host, port
    if dst then
        host, port = match(dst, "^%[?([^%]]+)%]?:(%d+)$")
        port = tonumber(port)
    end
    local capture = conf.capture_ports
    if not host or not port or port == capture[1] or port == capture[2] then
        core.log.warn("apisix-mesh: no original destination to pass through to: ", dst)
        return core.response.exit(502)
    end
    -- the service istiod names for an inbound port: Istio's metrics report it (istio_metrics.lua)
    ctx.apisix_mesh_service = conf.service
    local grpc = conf.scheme == "grpc"
    -- one cached upstream per key: a destination reached by both schemes needs two
    upstream.set(ctx, (grpc and "passthrough-grpc#" or "passthrough#") .. dst, ctx.conf_version, {
        type = "roundrobin",
        scheme = grpc and "grpc" or "http",
        pass_host = "pass",
        nodes = {{host = host, port = port, weight = 1, priority = 0}},
        timeout = {connect = conf.connect_timeout, send = conf.io_timeout, read = conf.io_timeout},
        parent = ctx.matched_route,
    })
    if grpc then
        -- APISIX takes the scheme from the route's own upstream only (set_by_route); nginx's gRPC
        -- proxy is chosen by ctx.upstream_scheme
        upstream.set_scheme(ctx, ctx.upstream_conf)
    end
end

return _M
