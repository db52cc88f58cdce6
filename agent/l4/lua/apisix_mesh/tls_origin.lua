-- The TLS relay: a stream server (webhook/injection/apisix-config.ts, tlsRelaySnippet) that APISIX
-- reaches at a loopback alias per (cluster, endpoint) (agent/mtls/origination.ts). For the alias
-- the connection was made to, it connects to the endpoint and
--  * mtls: originates TLS as Envoy does for Istio (the workload certificate chain as client
--    certificate, the cluster's SNI and ALPN), then checks the server's chain against the mesh
--    roots and its SAN against the cluster's matchers (peer_identity.lua) before it forwards a
--    single byte; a server that fails the check gets nothing and the connection is closed;
--  * tls: originates TLS as Envoy does for a DestinationRule SIMPLE (no client certificate) or MUTUAL
--    (the client certificate and key from files, tls_client_cert.lua, or from the SDS secret of
--    credentialName, tls_sds.lua; the
--    cluster's SNI or, for HTTP, the service's host (simple-tls.ts); the server's chain checked
--    against the system bundle, the DestinationRule's CA file (tls_roots.lua) or credentialName's CA
--    secret (tls_sds.lua), its SANs against
--    the matchers or, for HTTP with auto_san_validation, the service's host; insecureSkipVerify:
--    no check, as Envoy), before a single byte is forwarded;
--  * plain: forwards as is (auto-mTLS to an endpoint without a sidecar);
--  * refuse, an unknown alias, no workload identity: closes the connection (APISIX answers 502).
-- Then it copies bytes both ways until either side closes.
-- A verified connection's TLS session is kept per alias (this worker, at most SESSION_MAX_AGE) and
-- offered on the next connection: a resumed session skips the certificate exchange and the RSA
-- signature, and is accepted without a new check only when it was established, verified, with the
-- same identity (or trust store) and the same cluster settings on the same relay port (the cache
-- key), so resumption never widens who is trusted.
local core = require("apisix.core")
local tls_config = require("apisix_mesh.tls_config")
local tls_socket = require("apisix_mesh.tls_socket")
local peer_identity = require("apisix_mesh.peer_identity")
local tls_roots = require("apisix_mesh.tls_roots")
local tls_client_cert = require("apisix_mesh.tls_client_cert")
local tls_sds = require("apisix_mesh.tls_sds")

local BUFFER = 65536
-- Envoy's TCP proxy idle timeout; APISIX's own upstream timeouts bound HTTP exchanges
local IDLE_TIMEOUT_MS = 3600 * 1000
local DEFAULT_CONNECT_TIMEOUT_MS = 5000
local SESSION_MAX_AGE = 300
local SESSIONS_MAX = 10000

-- alias (and relay port) → { session, cluster, identity, at }; `identity`: what the server was
-- verified with (the workload identity, a trust store, or NO_CHECK)
local sessions = {}
local session_count = 0

local function cached_session(alias, found, identity)
    local s = sessions[alias]
    if s and s.cluster == found.cluster and s.identity == identity and ngx.now() - s.at < SESSION_MAX_AGE then
        return s.session
    end
    return nil
end

local function keep_session(alias, up, found, identity)
    local session = tls_socket.session(up)
    if not session then
        return
    end
    if not sessions[alias] then
        if session_count >= SESSIONS_MAX then
            sessions, session_count = {}, 0
        end
        session_count = session_count + 1
    end
    sessions[alias] = { session = session, cluster = found.cluster, identity = identity, at = ngx.now() }
end

local _M = {}

local function alias_address(ip)
    local second = ip and tonumber(ip:match("^127%.(%d+)%.%d+%.%d+$"))
    return second ~= nil and second >= 64 and second <= 127
end

local function refuse(level, alias, ...)
    core.log[level]("apisix-mesh: TLS relay ", alias or "?", ": ", ...)
    return ngx.exit(ngx.ERROR)
end

local function pump(from, to, on_first)
    while true do
        local data, err = from:receiveany(BUFFER)
        if not data then
            return err
        end
        if on_first then
            on_first()
            on_first = nil
        end
        local ok
        ok, err = to:send(data)
        if not ok then
            return err
        end
    end
end

local function wire_cache(list)
    -- the wire form of a cluster's list, computed once per configuration object
    local wire = list.__wire
    if not wire then
        local err
        wire, err = tls_socket.alpn_wire(list)
        if not wire then
            return nil, err
        end
        list.__wire = wire
    end
    return wire
end

-- a SIMPLE cluster with insecureSkipVerify: its sessions' cache key
local NO_CHECK = {}

-- the session cache key for a trust store (or NO_CHECK) and a client certificate: one object per
-- pair, alive as long as both are
local pair_keys = setmetatable({}, { __mode = "k" })
local function pair_key(trusted, client)
    if not client then
        return trusted
    end
    local per = pair_keys[trusted]
    if not per then
        per = setmetatable({}, { __mode = "k" })
        pair_keys[trusted] = per
    end
    local key = per[client]
    if not key then
        key = {}
        per[client] = key
    end
    return key
end

-- DestinationRule SIMPLE / MUTUAL: { store (nil: no check), roots (its name), client ({chain, key}
-- for MUTUAL), key (the session cache's) }, or nil and why.
local function simple_trust(cluster)
    local client, err
    if cluster.client_secret then
        client, err = tls_sds.client(cluster.client_secret)
        if not client then
            return nil, err
        end
    elseif cluster.client_cert_file and cluster.client_key_file then
        client, err = tls_client_cert.load(cluster.client_cert_file, cluster.client_key_file)
        if not client then
            return nil, err
        end
    end
    if cluster.verify == "none" then
        return { client = client, key = pair_key(NO_CHECK, client) }
    end
    local store, path
    if cluster.verify == "secret" then
        store, err = tls_sds.store(cluster.ca_secret or "")
        if not store then
            return nil, err
        end
        return { store = store, roots = "the CA certificates of the SDS secret " .. cluster.ca_secret, client = client, key = pair_key(store, client) }
    end
    store, err, path = tls_roots.store(cluster.verify, cluster.ca_file, cluster.crl_file)
    if not store then
        return nil, err
    end
    return { store = store, roots = "the CA certificates in " .. path, client = client, key = pair_key(store, client) }
end

-- SAN matchers for a SIMPLE cluster's HTTP connections with auto_san_validation: the service's host
local function auto_san(cluster)
    local m = cluster.__auto_san
    if not m then
        m = { { kind = "exact", value = cluster.auto_san_host } }
        cluster.__auto_san = m
    end
    return m
end

-- Handshake and check; returns nil and the session cache key, or the reason for refusing.
local function originate(up, slot, found, identity, trust, tcp)
    local cluster = found.cluster
    local alpn, err = wire_cache((tcp and cluster.alpn_tcp or cluster.alpn) or {})
    if not alpn then
        return err
    end
    local store, roots, key, cert, pkey = nil, nil, identity, nil, nil
    local sni, san = cluster.sni, cluster.san
    if identity then
        store, cert, pkey = identity.store, identity.chain, identity.key
    else
        store, roots, key = trust.store, trust.roots, trust.key
        if trust.client then
            cert, pkey = trust.client.chain, trust.client.key
        end
        if not tcp then
            -- Envoy's auto_sni / auto_san_validation are options of HTTP upstreams only
            if (not sni or sni == "") and cluster.auto_sni_host then
                sni = cluster.auto_sni_host
            end
            if (not san or #san == 0) and cluster.auto_san_host then
                san = auto_san(cluster)
            end
        end
    end
    local offered = cached_session(slot, found, key)
    local ok, resumed = tls_socket.handshake(up, sni, alpn, cert, pkey, offered)
    if not ok then
        return "TLS handshake failed: " .. tostring(resumed)
    end
    if (resumed and offered) or not store then
        -- the server holds the secret of a session verified under this cache key, or nothing is checked
        return nil, key
    end
    local leaf, chain
    leaf, chain, err = tls_socket.peer_chain(up)
    if not leaf then
        return "cannot read the server's certificate: " .. tostring(err)
    end
    local reason = peer_identity.check(store, leaf, chain, san, roots)
    tls_socket.clear_errors()
    return reason, key
end

-- `tcp_port`: connections to this port come from the L4 front's TCP proxies (the cluster's ALPN).
function _M.relay(tcp_port)
    local alias = ngx.var.server_addr
    if not alias_address(alias) or not (ngx.var.remote_addr or ""):find("^127%.") then
        return refuse("warn", alias, "not a loopback connection to a relay alias (from ", ngx.var.remote_addr, ")")
    end
    -- the alias may come with a configuration this worker has not read yet: wait a little
    local found = tls_config.lookup(alias)
    for _ = 1, 30 do
        if found then break end
        ngx.sleep(0.1)
        found = tls_config.lookup(alias)
    end
    if not found then
        return refuse("warn", alias, "no endpoint has this alias (yet)")
    end
    local endpoint = found.endpoint
    local where = found.cluster.cluster .. " endpoint " .. endpoint.host .. ":" .. endpoint.port
    if endpoint.mode == "refuse" then
        return refuse("error", alias, where, " refused: ", endpoint.reason or "its TLS settings cannot be enforced")
    end
    local identity, trust, err
    if endpoint.mode == "mtls" then
        identity, err = tls_config.identity()
        if not identity then
            return refuse("error", alias, where, " refused: mutual TLS needs the workload identity: ", err)
        end
    elseif endpoint.mode == "tls" then
        trust, err = simple_trust(found.cluster)
        if not trust then
            return refuse("error", alias, where, " refused: ", err)
        end
    end

    local down
    down, err = ngx.req.socket(true)
    if not down then
        return refuse("error", alias, "cannot take the client connection: ", err)
    end
    local up = ngx.socket.tcp()
    up:settimeouts(found.cluster.connect_timeout_ms or DEFAULT_CONNECT_TIMEOUT_MS, IDLE_TIMEOUT_MS, IDLE_TIMEOUT_MS)
    local ok
    ok, err = up:connect(endpoint.host, endpoint.port)
    if not ok then
        return refuse("error", alias, "cannot connect to ", where, ": ", err)
    end
    local tcp = tonumber(ngx.var.server_port) == tcp_port
    -- sessions are kept per relay port: SNI and SAN checks of SIMPLE differ between HTTP and TCP
    local slot = tcp and alias .. "/tcp" or alias
    local verified_with
    if endpoint.mode == "mtls" or endpoint.mode == "tls" then
        local reason
        reason, verified_with = originate(up, slot, found, identity, trust, tcp)
        if reason then
            up:close()
            return refuse("error", alias, where, " refused: ", reason)
        end
    end
    down:settimeouts(IDLE_TIMEOUT_MS, IDLE_TIMEOUT_MS, IDLE_TIMEOUT_MS)

    local to_server = ngx.thread.spawn(pump, down, up)
    -- the server's first data: a TLS 1.3 ticket has been read by then
    local keep = verified_with and function() keep_session(slot, up, found, verified_with) end
    local to_client = ngx.thread.spawn(pump, up, down, keep)
    local _, why = ngx.thread.wait(to_server, to_client)
    if why == "closed" and tcp then
        -- a half-close on a TCP proxy (the L4 front passes it on: proxy_half_close) is passed to the
        -- other side, which may still answer, as Envoy's TCP proxy does
        if coroutine.status(to_server) == "dead" then
            if endpoint.mode == "mtls" or endpoint.mode == "tls" then
                tls_socket.close_notify(up)
            end
            up:shutdown("send")
            ngx.thread.wait(to_client)
        else
            down:shutdown("send")
            ngx.thread.wait(to_server)
        end
    end
    ngx.thread.kill(to_server)
    ngx.thread.kill(to_client)
    up:close()
end

return _M
