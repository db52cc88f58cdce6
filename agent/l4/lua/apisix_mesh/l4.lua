-- The L4 front: APISIX's stream subsystem on the capture ports (15001 outbound, 15006 inbound;
-- see the stream snippet in webhook/injection/apisix-config.ts). Each captured connection is
-- dispatched as Envoy dispatches it with istiod's listeners: HTTP to APISIX's HTTP listener (the
-- routes), TCP and TLS by destination and SNI to a cluster, to the original destination, or
-- refused. Decisions are taken in preread; balance() connects where preread decided.
local core = require("apisix.core")
local balancer = require("ngx.balancer")
local ipmatcher = require("resty.ipmatcher")
local original_dst = require("apisix_mesh.original_dst")
local handoff = require("apisix_mesh.handoff")
local handoff_steering = require("apisix_mesh.handoff_steering")
local detect = require("apisix_mesh.detect")
local chains = require("apisix_mesh.chains")
local l4_config = require("apisix_mesh.l4_config")
local l4_upstreams = require("apisix_mesh.l4_upstreams")
local l4_rbac = require("apisix_mesh.l4_rbac")
local l4_metrics = require("apisix_mesh.l4_metrics")
local istio_labels = require("apisix_mesh.istio_labels")
local endpoint_workload = require("apisix_mesh.endpoint_workload")
local tcp_mtls = require("apisix_mesh.tcp_mtls")

-- The source addresses Istio's inbound forwarding uses (InboundPassthroughBindIpv4/Ipv6), one per
-- family of the address connected to; the capture rules let them through, and the init container
-- puts ::6 on lo (IPv6 loopback is ::1/128 only, nothing else would be bindable).
local INBOUND_SOURCE = { ipv4 = "127.0.0.6", ipv6 = "::6" }
local DEFAULT_CONNECT_TIMEOUT = 10

local _M = {}

local function refuse(reason, dst)
    core.log.info("apisix-mesh: connection to ", dst or "?", " refused: ", reason)
    return ngx.exit(ngx.ERROR)
end

local function family_of(host)
    return host:find(":", 1, true) and "ipv6" or "ipv4"
end

local function pick_weighted(list, weight_of)
    local total = 0
    for _, x in ipairs(list) do
        total = total + weight_of(x)
    end
    if total <= 0 then
        return nil
    end
    local r = math.random() * total
    for _, x in ipairs(list) do
        r = r - weight_of(x)
        if r < 0 then
            return x
        end
    end
    return list[#list]
end

local function cluster_peer(action)
    local cluster = pick_weighted(action.clusters or {}, function(c) return c.weight end)
    if not cluster then
        return nil, "no weighted cluster"
    end
    local nodes, connect = l4_upstreams.get(cluster.upstream_id)
    -- the listener and its clusters' endpoints are two watches: the first may be a moment ahead
    for _ = 1, 10 do
        if nodes then break end
        ngx.sleep(0.1)
        nodes, connect = l4_upstreams.get(cluster.upstream_id)
    end
    if not nodes or #nodes == 0 then
        return nil, "cluster " .. cluster.upstream_id .. " has no endpoints"
    end
    local node = pick_weighted(nodes, function(n) return n.weight or 1 end)
    local meta = l4_upstreams.meta(cluster.upstream_id)
    if not node then
        return nil, "cluster " .. cluster.upstream_id .. " has no endpoint with weight"
    end
    local host = node.host
    -- STRICT_DNS / LOGICAL_DNS clusters (ServiceEntry resolution DNS) name hosts: the balancer
    -- connects to addresses only, so resolve as APISIX resolves its upstreams' nodes
    if not ipmatcher.parse_ipv4(host) and not ipmatcher.parse_ipv6(host) then
        local ip, err = core.resolver.parse_domain(host)
        if not ip then
            return nil, "cannot resolve " .. host .. ": " .. tostring(err)
        end
        host = ip
    end
    return { host = host, port = node.port, connect = action.connect_timeout or connect, cluster = meta, workload = node.workload }
end

-- The destination service of Istio's TCP metrics: an outbound cluster names it, an inbound one
-- (an original destination: the action's, else a cluster's upstream, agent/l4/) carries istiod's
-- service metadata, the pass-through has a name only.
local function destination_service(direction, peer)
    local cluster = peer.cluster
    local service = cluster and cluster.service or peer.service
    if direction == "inbound" and type(service) == "table" and service.host then
        return service.host, service.name, service.namespace
    end
    if not cluster then
        return nil, direction == "outbound" and "PassthroughCluster" or "InboundPassthroughCluster", nil
    end
    return istio_labels.service_of_cluster(cluster.name)
end

-- A node of an upstream whose endpoints need TLS is a TLS relay alias (agent/mtls/origination.ts):
-- TCP proxies reach the relay on its TCP port (the cluster's ALPN), from the one source address
-- the capture rules let through to a loopback address.
local function relay_alias(ip)
    local second = tonumber(ip:match("^127%.(%d+)%.%d+%.%d+$"))
    return second ~= nil and second >= 64 and second <= 127
end

-- http_port / tls_port: APISIX's loopback HTTP listener, and its TLS listener for the chains that
-- terminate Istio's mTLS (hook.lua, mesh_tls.lua): the raw TLS bytes go there, with the same hand-off.
-- relay_tcp_port: the TLS relay's port for TCP proxies (tls_origin.lua); tcp_tls_port: the stream
-- TLS listener for TCP proxies behind Istio's mTLS (tcp_mtls.lua), the raw TLS bytes go there too
function _M.preread(direction, http_port, outbound_port, inbound_port, tls_port, relay_tcp_port, tcp_tls_port)
    local ip, port, family = original_dst.get()
    if not ip then
        return refuse("not a redirected connection (no original destination)")
    end
    local dst = (family == "ipv6" and "[" .. ip .. "]" or ip) .. ":" .. port
    if port == outbound_port or port == inbound_port then
        return refuse("destination is a capture port", dst)
    end
    -- a worker (re)started a moment ago may not have read the listeners yet: wait, as a client
    -- of Envoy waits for its listener, rather than refuse
    for _ = 1, 50 do
        if l4_config.loaded() and l4_upstreams.loaded() then break end
        ngx.sleep(0.1)
    end
    local listener = l4_config.listener(direction, ip, port)
    if not listener then
        return refuse("no listener for this destination yet", dst)
    end
    local candidates, inspect = chains.by_destination(listener, ip, port)
    local seen
    if inspect then
        local err
        seen, err = detect.inspect(ngx.req.socket())
        if not seen then
            return refuse("client went away before its first bytes: " .. tostring(err), dst)
        end
    end
    local chain = chains.by_protocol(candidates, seen) or listener.default
    if not chain then
        return refuse("no filter chain matches", dst)
    end
    local action = chain.action
    -- behind Istio's mTLS, a TCP proxy's network RBAC needs the peer's principal: the TLS listener
    -- judges it once the handshake is done (tcp_mtls.lua), before anything is forwarded
    local mtls_tcp = action.tls and (action.kind == "cluster" or action.kind == "passthrough")
    if chain.rbac and action.kind ~= "refuse" and not mtls_tcp then
        local client = ngx.var.remote_addr
        local ok, denied = pcall(l4_rbac.denied_by, chain.rbac, ip, port, client, seen)
        if not ok then
            core.log.error("apisix-mesh: network RBAC raised an error, connection refused: ", tostring(denied):sub(1, 200))
            return ngx.exit(ngx.ERROR)
        end
        if denied then
            -- Envoy's network RBAC closes the connection; the front closes it before dialling anyone
            l4_metrics.rbac_denied()
            core.log.warn("apisix-mesh: connection from ", client, " to ", dst, " denied by network RBAC filter ",
                          denied, " of chain ", chain.name or "?")
            return ngx.exit(ngx.ERROR)
        end
    end
    local ctx = ngx.ctx
    if mtls_tcp then
        return _M.hand_to_tls(chain, action, direction, ip, port, dst, tcp_tls_port)
    end
    if action.kind == "http" then
        local address, err = handoff.reserve(direction, ngx.var.remote_addr, ngx.var.remote_port, dst, action.peer_sans_record)
        if not address then
            core.log.error("apisix-mesh: cannot hand ", dst, " to the HTTP listener: ", err)
            return ngx.exit(ngx.ERROR)
        end
        ctx.apisix_mesh_handoff = address
        ngx.var.apisix_mesh_bind = address
        local listener = action.tls and tls_port or http_port
        handoff_steering.ensure(listener)
        ctx.apisix_mesh_peer = { host = "127.0.0.1", port = listener }
    elseif action.kind == "passthrough" then
        if direction == "inbound" then
            ngx.var.apisix_mesh_bind = INBOUND_SOURCE[family]
        end
        ctx.apisix_mesh_peer = { host = ip, port = port, connect = action.connect_timeout, service = action.service }
    elseif action.kind == "cluster" then
        local peer, err = cluster_peer(action)
        if not peer then
            return refuse(err, dst)
        end
        if direction == "inbound" then
            -- the cluster's endpoint (the pod IP the agent pins) may be of the other family
            ngx.var.apisix_mesh_bind = INBOUND_SOURCE[family_of(peer.host)]
        elseif relay_alias(peer.host) then
            ngx.var.apisix_mesh_bind = INBOUND_SOURCE.ipv4
        end
        if relay_alias(peer.host) then
            peer.port = relay_tcp_port
        end
        ctx.apisix_mesh_peer = peer
    else
        return refuse(action.reason or "refused by the listener's filter chain " .. (chain.name or ""), dst)
    end
    if action.kind ~= "http" then
        local service, service_name, service_namespace = destination_service(direction, ctx.apisix_mesh_peer)
        ctx.apisix_mesh_tcp_series = l4_metrics.opened({
            outbound = direction == "outbound",
            service = service, service_name = service_name, service_namespace = service_namespace,
            peer = direction == "outbound" and endpoint_workload.parse(ctx.apisix_mesh_peer.workload) or nil,
        })
    end
end

-- A TCP proxy behind Istio's mTLS: the front decides where the plaintext goes (as it would without
-- TLS) and hands the raw TLS, with that decision, to the stream TLS listener on loopback.
function _M.hand_to_tls(chain, action, direction, ip, port, dst, tcp_tls_port)
    if direction ~= "inbound" or not tcp_tls_port then
        return refuse("Istio's mTLS is terminated on inbound listeners only", dst)
    end
    local peer
    if action.kind == "passthrough" then
        peer = { host = ip, port = port, connect = action.connect_timeout }
    else
        local err
        peer, err = cluster_peer(action)
        if not peer then
            return refuse(err, dst)
        end
    end
    local address, err = handoff.reserve(direction, ngx.var.remote_addr, ngx.var.remote_port, dst, action.peer_sans_record)
    if address then
        local ok
        ok, err = tcp_mtls.remember(address, chain, peer)
        if not ok then
            handoff.release(address)
            address = nil
        end
    end
    if not address then
        core.log.error("apisix-mesh: cannot hand ", dst, " to the TCP mTLS listener: ", err)
        return ngx.exit(ngx.ERROR)
    end
    handoff_steering.ensure(tcp_tls_port)
    local ctx = ngx.ctx
    ctx.apisix_mesh_handoff = address
    ctx.apisix_mesh_tcp_mtls = true
    ngx.var.apisix_mesh_bind = address
    ctx.apisix_mesh_peer = { host = "127.0.0.1", port = tcp_tls_port }
end

-- Istio's TCP metrics of a connection behind Istio's mTLS, once the stream TLS listener has verified
-- its peer (tcp_mtls.lua): the chain's action says the destination service (the first cluster's:
-- inbound chains name one), the handshake the principals. Returns the series, for l4_metrics.log().
function _M.mtls_opened(action, peer_principal)
    local peer = { service = action.service }
    if action.kind == "cluster" then
        local first = action.clusters and action.clusters[1]
        peer.cluster = first and l4_upstreams.meta(first.upstream_id)
    end
    local service, service_name, service_namespace = destination_service("inbound", peer)
    local id = require("apisix_mesh.identity").current()
    return l4_metrics.opened({
        outbound = false,
        service = service, service_name = service_name, service_namespace = service_namespace,
        mtls = true, peer_principal = peer_principal, local_principal = id and id.spiffe_id,
    })
end

function _M.balance()
    local peer = ngx.ctx.apisix_mesh_peer
    if not peer then
        return ngx.exit(ngx.ERROR)
    end
    local host = peer.host
    -- nginx parses the peer as a URL: an IPv6 address needs its brackets
    if family_of(host) == "ipv6" and host:byte(1) ~= 91 then
        host = "[" .. host .. "]"
    end
    local ok, err = balancer.set_current_peer(host, peer.port)
    if not ok then
        core.log.error("apisix-mesh: cannot connect to ", peer.host, ":", peer.port, ": ", err)
        return ngx.exit(ngx.ERROR)
    end
    balancer.set_timeouts(peer.connect or DEFAULT_CONNECT_TIMEOUT, nil, nil)
end

function _M.log()
    local ctx = ngx.ctx
    local address = ctx.apisix_mesh_handoff
    if address then
        if ngx.ctx.apisix_mesh_tcp_mtls then
            tcp_mtls.forget(address)
        end
        handoff.release(address)
    end
    if ctx.apisix_mesh_tcp_series then
        local var = ngx.var
        l4_metrics.closed(ctx.apisix_mesh_tcp_series, var.bytes_received, var.bytes_sent)
    end
end

return _M
