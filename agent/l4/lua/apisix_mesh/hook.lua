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
        require("apisix_mesh.tls_config").init_worker()
    end
    return
end

local core = require("apisix.core")
local handoff = require("apisix_mesh.handoff")
local client = require("resty.apisix.client")
local balancer = require("ngx.balancer")

local INBOUND_SOURCE = "127.0.0.6"

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
    if h.direction == "inbound" then
        ngx.var.apisix_mesh_upstream_bind = INBOUND_SOURCE
    end
    return http_access_phase(...)
end

-- Upstreams whose endpoints need TLS point at the TLS relay's loopback aliases (127.64.0.0/10,
-- agent/mtls/origination.ts). The capture rules send the proxy's own connections to a loopback
-- address other than 127.0.0.1 to the inbound listener, except those from 127.0.0.6: connections
-- to the relay leave from there. The node is known only once APISIX's balancer has picked it.
local http_balancer_phase = apisix.http_balancer_phase
apisix.http_balancer_phase = function(...)
    http_balancer_phase(...)
    local api_ctx = ngx.ctx.api_ctx
    local ip = api_ctx and api_ctx.balancer_ip
    local second = ip and tonumber(ip:match("^127%.(%d+)%.%d+%.%d+$"))
    if second and second >= 64 and second <= 127 then
        local ok, err = balancer.bind_to_local_addr(INBOUND_SOURCE)
        if not ok then
            core.log.error("apisix-mesh: cannot bind the connection to the TLS relay: ", err)
            return ngx.exit(502)
        end
    end
end
