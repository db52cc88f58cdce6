-- APISIX's lua_module_hook for the sidecar: loaded in init_by_lua of both subsystems, before
-- APISIX's phases run. It adds the L4 front's configuration watch to the stream workers and, in
-- the HTTP subsystem, takes each request's capture facts from the hand-off record of its
-- connection (see handoff.lua): the client address, the direction, and the original destination,
-- which the agent's routes read as `connection_original_dst` and `apisix_mesh_direction`.
local apisix = require("apisix")

if ngx.config.subsystem == "stream" then
    local stream_init_worker = apisix.stream_init_worker
    apisix.stream_init_worker = function(...)
        stream_init_worker(...)
        require("apisix_mesh.l4_config").init_worker()
    end
    return
end

local core = require("apisix.core")
local handoff = require("apisix_mesh.handoff")
local client = require("resty.apisix.client")

-- Istio's inbound forwarding sources (see l4.lua), one per family of the app address connected to:
-- the pinned pod IP's, or for the inbound pass-through the original destination's
local INBOUND_SOURCE_IPV4 = "127.0.0.6"
local INBOUND_SOURCE_IPV6 = "::6"

-- The family is known once APISIX has picked the server, in its access phase; nginx reads
-- proxy_bind/grpc_bind after that phase (gRPC after the redirect to @grpc_pass, which keeps
-- variables but ends the access phase's Lua: hence here and not after http_access_phase).
local load_balancer = require("apisix.balancer")
local pick_server = load_balancer.pick_server
load_balancer.pick_server = function(route, api_ctx)
    local server, err = pick_server(route, api_ctx)
    local h = ngx.ctx.apisix_mesh
    if server and h and h.direction == "inbound" and ngx.get_phase() == "access" then
        local host = server.host
        ngx.var.apisix_mesh_upstream_bind = (type(host) == "string" and host:find(":", 1, true))
            and INBOUND_SOURCE_IPV6 or INBOUND_SOURCE_IPV4
    end
    return server, err
end

core.ctx.register_var("connection_original_dst", function()
    local h = ngx.ctx.apisix_mesh
    return h and h.dst
end)
core.ctx.register_var("apisix_mesh_direction", function()
    local h = ngx.ctx.apisix_mesh
    return h and h.direction
end)

local status_ready = apisix.status_ready
apisix.status_ready = function(...)
    local unready = handoff.first_unready(ngx.worker.count())
    if unready then
        return core.response.exit(503, core.json.encode({
            status = "error",
            error = "worker id: " .. unready .. " has not loaded the L4 listeners",
        }))
    end
    return status_ready(...)
end

local http_access_phase = apisix.http_access_phase
apisix.http_access_phase = function(...)
    local h = handoff.lookup(ngx.var.realip_remote_addr)
    if not h then
        -- only the L4 front may speak to this listener: anything else has no capture facts
        core.log.warn("apisix-mesh: request on the HTTP listener without a captured connection from ",
                      ngx.var.realip_remote_addr, ": refused")
        return ngx.exit(403)
    end
    ngx.ctx.apisix_mesh = h
    client.set_real_ip(h.client_ip, h.client_port)
    return http_access_phase(...)
end
