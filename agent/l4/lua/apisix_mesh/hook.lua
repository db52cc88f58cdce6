-- APISIX's lua_module_hook for the sidecar: loaded in init_by_lua of both subsystems, before
-- APISIX's phases run. It adds the L4 front's configuration watch to the stream workers and, in
-- the HTTP subsystem, takes each request's capture facts from the hand-off record of its
-- connection (see handoff.lua): the client address, the direction, and the original destination,
-- which the agent's routes read as `connection_original_dst` and `apisix_mesh_direction`.
local apisix = require("apisix")
-- LuaJIT's collector as the injection configures it, before APISIX forks its processes (lua_gc.lua)
require("apisix_mesh.lua_gc").apply()
-- APISIX's privileged agent (the export and status servers) holds none of the configuration
-- (privileged_agent.lua); its Prometheus export's revisions come from the workers (served_revisions.lua)
local privileged_agent = require("apisix_mesh.privileged_agent")

if ngx.config.subsystem == "stream" then
    -- nothing in the privileged agent's stream subsystem reads the configuration
    privileged_agent.install(false)
    local without_upstreams = require("apisix_mesh.stream_without_upstreams")
    without_upstreams.install()
    local stream_init_worker = apisix.stream_init_worker
    apisix.stream_init_worker = function(...)
        stream_init_worker(...)
        require("apisix_mesh.lua_gc").report()
        without_upstreams.check()
        require("apisix_mesh.l4_config").init_worker()
        require("apisix_mesh.l4_upstreams").init_worker()
        require("apisix_mesh.tls_config").init_worker()
        require("apisix_mesh.l4_metrics").init_worker()
        privileged_agent.check("stream")
    end
    return
end

local served_revisions = require("apisix_mesh.served_revisions")
privileged_agent.install(true, served_revisions.install())
-- APISIX's router with its host lookup as a table, a service's names sharing one URI radixtree (host_router.lua)
require("apisix_mesh.host_router").install()
-- Envoy's LEAST_REQUEST as the picker of `least_conn` upstreams (least_request.lua)
require("apisix_mesh.least_request").install()

local core = require("apisix.core")
local ngx_ssl = require("ngx.ssl")
local handoff = require("apisix_mesh.handoff")
local hash_key = require("apisix_mesh.hash_key")
local outlier = require("apisix_mesh.outlier")
local identity = require("apisix_mesh.identity")
local mesh_tls = require("apisix_mesh.mesh_tls")
local istio_metrics = require("apisix_mesh.istio_metrics")
local peer_exchange = require("apisix_mesh.peer_exchange")
local client = require("resty.apisix.client")
local balancer = require("ngx.balancer")

-- Istio's inbound forwarding sources (see l4.lua), one per family of the app address connected to:
-- the original destination's (inbound clusters are original destinations, as in Envoy)
local INBOUND_SOURCE_IPV4 = "127.0.0.6"
local INBOUND_SOURCE_IPV6 = "::6"

-- The family is known once APISIX has picked the server, in its access phase; nginx reads
-- proxy_bind/grpc_bind after that phase (gRPC after the redirect to @grpc_pass, which keeps
-- variables but ends the access phase's Lua: hence here and not after http_access_phase).
local load_balancer = require("apisix.balancer")
local pick_server = load_balancer.pick_server
load_balancer.pick_server = function(route, api_ctx)
    -- Envoy's hash key for consistent hashing, before APISIX's picker reads it (hash_key.lua)
    hash_key.before_pick(api_ctx)
    -- Envoy's outlier detection: ejected hosts are not picked (outlier.lua)
    if not outlier.before_pick(api_ctx) then
        return core.response.exit(503, "no healthy upstream")
    end
    local server, err = pick_server(route, api_ctx)
    local h = ngx.ctx.apisix_mesh
    if server and h and h.direction == "inbound" and ngx.get_phase() == "access" then
        local host = server.host
        ngx.var.apisix_mesh_upstream_bind = (type(host) == "string" and host:find(":", 1, true))
            and INBOUND_SOURCE_IPV6 or INBOUND_SOURCE_IPV4
    end
    return server, err
end

-- APISIX's loopback TLS listener the front hands inbound mTLS to (webhook/injection/apisix-config.ts)
local MESH_TLS_PORT = 15082
-- what APISIX's own client-certificate check (verify_https_client) reads: an SSL object without
-- `client`, so that APISIX adds no check of its own (its SNI == Host rule breaks every Istio client)
local MESH_SSL = { value = {} }
local XFCC = "x-forwarded-client-cert"

-- APISIX 3.13's consumers() raises (a nil list) until the worker has read the consumers
-- directory, a moment after every start now that the sidecar skips APISIX's start-up load
-- (disable_sync_configuration_during_start): its Prometheus export would answer 500 and log an
-- error meanwhile. Not loaded yet is what APISIX itself answers with nil, nil.
local consumer = require("apisix.consumer")
local consumers = consumer.consumers
consumer.consumers = function()
    local ok, list, version = pcall(consumers)
    if ok then
        return list, version
    end
    return nil, nil
end

local http_init_worker = apisix.http_init_worker
apisix.http_init_worker = function(...)
    -- a worker that starts again holds nothing yet: its previous figures go before its first read
    served_revisions.init_worker()
    http_init_worker(...)
    require("apisix_mesh.lua_gc").report()
    identity.init_worker()
    istio_metrics.init_worker()
    peer_exchange.init_worker()
    -- Istio's metrics on APISIX's export server (its content handler looks the function up per request)
    local exporter = require("apisix.plugins.prometheus.exporter")
    local export_metrics = exporter.export_metrics
    exporter.export_metrics = function(...)
        if ngx.var.uri == istio_metrics.PATH and ngx.req.get_method() == "GET" then
            return istio_metrics.export()
        end
        return export_metrics(...)
    end
    privileged_agent.check("HTTP")
end


-- the mesh TLS port answers with the workload certificate whatever the SNI (mesh_tls.lua)
local ssl_client_hello_phase = apisix.ssl_client_hello_phase
apisix.ssl_client_hello_phase = function(...)
    if ngx_ssl.server_port() == MESH_TLS_PORT then
        return
    end
    return ssl_client_hello_phase(...)
end
local ssl_phase = apisix.ssl_phase
apisix.ssl_phase = function(...)
    if ngx_ssl.server_port() == MESH_TLS_PORT then
        return mesh_tls.ssl_certificate()
    end
    return ssl_phase(...)
end

-- the verified peer's URI SAN (RBAC's `authenticated` principal); empty for plaintext
core.ctx.register_var("apisix_mesh_peer_principal", function()
    return ngx.ctx.apisix_mesh_peer_principal or ""
end)

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

-- the cookie a hash policy made (hash_key.lua) goes out with the response; the answers count for
-- outlier detection (outlier.lua) before the client sees them
local http_header_filter_phase = apisix.http_header_filter_phase
apisix.http_header_filter_phase = function(...)
    local api_ctx = ngx.ctx.api_ctx
    hash_key.header_filter(api_ctx)
    outlier.count(api_ctx)
    -- Istio's metadata exchange, the response's side (peer_exchange.lua)
    local h = ngx.ctx.apisix_mesh
    if h then
        peer_exchange.header_filter(h.direction)
    end
    return http_header_filter_phase(...)
end

-- Before APISIX's own log phase releases the request's context: requests whose response headers
-- never left count for outlier detection too (outlier.lua), and every request that came through the
-- capture is counted in Istio's standard metrics (istio_metrics.lua)
local http_log_phase = apisix.http_log_phase
apisix.http_log_phase = function(...)
    outlier.count(ngx.ctx.api_ctx)
    local ok, err = pcall(istio_metrics.log)
    if not ok then
        core.log.error("apisix-mesh: Istio metrics: ", tostring(err):sub(1, 200))
    end
    return http_log_phase(...)
end

local http_access_phase = apisix.http_access_phase
apisix.http_access_phase = function(...)
    local var = ngx.var
    -- once per connection from the dictionary, then from the worker's memo (handoff.lua)
    local h = handoff.lookup_for_connection(var.connection, var.realip_remote_addr)
    if not h then
        -- only the L4 front may speak to this listener: anything else has no capture facts
        core.log.warn("apisix-mesh: request on the HTTP listener without a captured connection from ",
                      ngx.var.realip_remote_addr, ": refused")
        return ngx.exit(403)
    end
    ngx.ctx.apisix_mesh = h
    client.set_real_ip(h.client_ip, h.client_port)
    if ngx.var.https == "on" and h.direction ~= "inbound" then
        -- the front hands only inbound mTLS chains to the TLS listener
        core.log.warn("apisix-mesh: ", h.direction, " request on the mTLS listener: refused")
        return ngx.exit(403)
    end
    if h.direction == "inbound" then
        if ngx.var.https == "on" then
            local peer, err = mesh_tls.peer()
            if not peer then
                core.log.warn("apisix-mesh: inbound mTLS request refused: ", err)
                return ngx.exit(403)
            end
            if not mesh_tls.peer_matches(peer, h.peer_sans) then
                core.log.warn("apisix-mesh: inbound mTLS request refused: the peer ", peer.principal:sub(1, 200),
                              " matches none of the chain's subject alt names")
                return ngx.exit(403)
            end
            ngx.ctx.apisix_mesh_peer_principal = peer.principal
            ngx.ctx.matched_ssl = MESH_SSL
            -- Istio's inbound HCM: APPEND_FORWARD, as Envoy does it: the client's own header is kept
            -- (its elements are the client's claims; the last element is what this sidecar verified)
            ngx.req.set_header(XFCC, mesh_tls.append_xfcc(ngx.req.get_headers()[XFCC], peer))
        elseif ngx.var.http_x_forwarded_client_cert then
            -- not mTLS: Envoy sanitizes the header
            ngx.req.clear_header(XFCC)
        end
        -- Istio's metadata exchange: the client's workload, out of the app's sight (peer_exchange.lua)
        peer_exchange.inbound_request()
    end
    return http_access_phase(...)
end

-- Istio's metadata exchange, outbound (peer_exchange.lua): once APISIX knows the route's upstream,
-- at the end of its access phase or in a retry location (retry-locations.ts); gRPC requests leave
-- handle_upstream for @grpc_pass, whose access phase comes back here.
local function outbound_exchange()
    local h = ngx.ctx.apisix_mesh
    if h and h.direction == "outbound" then
        peer_exchange.outbound_request(ngx.ctx.api_ctx)
    end
end
local handle_upstream = apisix.handle_upstream
apisix.handle_upstream = function(...)
    local a, b, c = handle_upstream(...)
    outbound_exchange()
    return a, b, c
end
local grpc_access_phase = apisix.grpc_access_phase
apisix.grpc_access_phase = function(...)
    grpc_access_phase(...)
    outbound_exchange()
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
        local ok, err = balancer.bind_to_local_addr(INBOUND_SOURCE_IPV4)
        if not ok then
            core.log.error("apisix-mesh: cannot bind the connection to the TLS relay: ", err)
            return ngx.exit(502)
        end
    end
end
