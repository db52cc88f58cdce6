-- Istio's inbound mTLS in front of a TCP proxy (PeerAuthentication STRICT / PERMISSIVE on a port
-- istiod declares as TCP: a database, a broker, ...). The L4 front cannot terminate TLS on the
-- captured connection itself (stream-lua has no server-side handshake on a downstream socket), so it
-- hands the raw TLS bytes, unread, to a stream TLS listener on loopback (webhook/injection/
-- apisix-config.ts, tcpMtlsSnippet) from a hand-off address of their own, as it hands HTTP
-- (handoff.lua). That listener:
--  * presents the workload certificate chain whatever the SNI and requires a client certificate
--    verified against the mesh roots in the handshake (mesh_tls.ssl_certificate, as the HTTP side);
--    no identity yet → the handshake fails: never another certificate, never plaintext;
--  * then, before a byte reaches the app: the peer's URI SAN against the chain's
--    match_subject_alt_names, and the chain's network RBAC with the peer's principal (Istio's
--    `principals` / `namespaces` on a TCP port), which the front could not judge before the handshake;
--  * connects where the front decided (the original destination or the inbound cluster's endpoint,
--    recorded with the hand-off) from Istio's inbound source address, and copies the plaintext bytes.
-- ALPN is never negotiated: Envoy's clients then send no TCP metadata exchange header, which this
-- listener would otherwise hand to the app.
local core = require("apisix.core")
local handoff = require("apisix_mesh.handoff")
local mesh_tls = require("apisix_mesh.mesh_tls")
local l4_config = require("apisix_mesh.l4_config")
local chains = require("apisix_mesh.chains")
local l4_rbac = require("apisix_mesh.l4_rbac")

-- the hand-off record's own part for these connections (handoff.attach)
local RECORD = "tcp-mtls"
-- Istio's inbound forwarding sources, as in l4.lua
local INBOUND_SOURCE = { ipv4 = "127.0.0.6", ipv6 = "::6" }

local _M = {}

local function family_of(host)
    return host:find(":", 1, true) and "ipv6" or "ipv4"
end

-- Front side: what the TLS listener needs besides the hand-off record (handoff.reserve): which chain
-- to judge (its index and name, to find it again), and where to connect (host, port, connect timeout).
function _M.remember(address, chain, peer)
    local value = chain.index .. "|" .. peer.host .. "|" .. peer.port .. "|" .. (peer.connect or "") .. "|" .. (chain.name or "")
    return handoff.attach(address, RECORD, value)
end

function _M.forget(address)
    handoff.detach(address, RECORD)
end

local function recorded(address)
    local value = handoff.attached(address, RECORD)
    if not value then
        return nil
    end
    local index, host, port, connect, name = value:match("^(%d+)|([^|]+)|(%d+)|([^|]*)|(.*)$")
    if not index then
        return nil
    end
    return { index = tonumber(index), host = host, port = tonumber(port), connect = tonumber(connect), name = name }
end

-- "ip:port" / "[ip]:port" (handoff.lua's dst) → ip, port
local function split_dst(dst)
    local ip, port = dst:match("^%[(.+)%]:(%d+)$")
    if not ip then
        ip, port = dst:match("^([^:]+):(%d+)$")
    end
    return ip, tonumber(port)
end

-- ssl_certificate_by_lua of the listener: the workload chain, the client verified against the roots
function _M.ssl_certificate()
    return mesh_tls.ssl_certificate()
end

local function refuse(level, from, ...)
    core.log[level]("apisix-mesh: inbound mTLS connection from ", from or "?", " refused: ", ...)
    return ngx.exit(ngx.ERROR)
end

-- preread_by_lua of the listener: runs after the handshake (nginx's stream SSL phase precedes preread)
function _M.preread()
    local address = ngx.var.remote_addr
    local h = handoff.lookup(address)
    local target = h and recorded(address)
    if not target or h.direction ~= "inbound" then
        -- only the front connects here, with a record; anything else has no captured connection
        core.log.warn("apisix-mesh: connection to the TCP mTLS listener from ", address, " without a captured connection: refused")
        return ngx.exit(ngx.ERROR)
    end
    local client = h.client_ip
    local peer, err = mesh_tls.peer()
    if not peer then
        return refuse("warn", client, err)
    end
    if not mesh_tls.peer_matches(peer, h.peer_sans) then
        return refuse("warn", client, "the peer ", peer.principal:sub(1, 200), " matches none of the chain's subject alt names")
    end
    local ip, port = split_dst(h.dst)
    local listener = ip and l4_config.listener("inbound", ip, port)
    local chain = listener and chains.at(listener, target.index)
    -- the listeners changed between the front's choice and the handshake: judge nothing stale
    if not chain or (chain.name or "") ~= target.name or not chain.action.tls then
        return refuse("warn", client, "the filter chain ", target.name:sub(1, 200), " of ", h.dst, " changed meanwhile")
    end
    if chain.rbac then
        local seen = { transport = "tls", sni = ngx.var.ssl_server_name and ngx.var.ssl_server_name:lower() or nil, alpn = {} }
        local ok, denied = pcall(l4_rbac.denied_by, chain.rbac, ip, port, client, seen, peer.principal)
        if not ok then
            core.log.error("apisix-mesh: network RBAC raised an error, connection refused: ", tostring(denied):sub(1, 200))
            return ngx.exit(ngx.ERROR)
        end
        if denied then
            require("apisix_mesh.l4_metrics").rbac_denied()
            core.log.warn("apisix-mesh: connection from ", client, " (", peer.principal:sub(1, 200), ") to ", h.dst,
                          " denied by network RBAC filter ", denied, " of chain ", chain.name or "?")
            return ngx.exit(ngx.ERROR)
        end
    end
    ngx.var.apisix_mesh_bind = INBOUND_SOURCE[family_of(target.host)]
    -- Istio's TCP metrics (l4_metrics.lua), closed in this listener's log phase
    ngx.ctx.apisix_mesh_tcp_series = require("apisix_mesh.l4").mtls_opened(chain.action, peer.principal)
    -- l4.balance() connects there
    ngx.ctx.apisix_mesh_peer = { host = target.host, port = target.port, connect = target.connect }
end

return _M
