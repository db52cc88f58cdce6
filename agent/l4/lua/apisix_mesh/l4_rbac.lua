-- Envoy's network RBAC (`envoy.filters.network.rbac`, Istio's AuthorizationPolicy on a TCP port),
-- judged by the L4 front in preread, once the filter chain is chosen and before anything is
-- forwarded: a denied connection is closed before the upstream is even dialled (Envoy judges at the
-- first byte from the client; no byte reaches the upstream there either, but Envoy has already
-- connected to it). The trees are the HTTP evaluator's (rbac.lua), with a connection's facts:
-- - the destination is the original destination, the peer (`source_ip`, `direct_remote_ip`,
--   `remote_ip`: no X-Forwarded-For on a connection) the client address;
-- - the server name is the SNI the front read from the ClientHello when it looked at the first
--   bytes (none for plaintext); when it did not look (the chains did not differ by it), unknown:
--   the front does not wait for a client's bytes only for a policy (server-first protocols);
-- - the peer's mTLS identity (`authenticated`, Istio's `principals` and `namespaces`): the verified
--   URI SAN on a chain that terminates Istio's mTLS, judged by the stream TLS listener once the
--   handshake is done (tcp_mtls.lua); "" on a plaintext chain, where no principal matches;
-- - headers, paths and metadata (never in a tree the agent compiles for a network filter) are
--   unknown: an ALLOW that needs them does not allow, a DENY that may match denies.
local rbac = require("apisix_mesh.rbac")

local _M = {}

local facts = {}

function facts.destination(f)
    return f.dst_bytes, f.dst_port
end

function facts.address(f, of)
    if of == "destination" then return f.dst_bytes end
    return f.peer_bytes
end

function facts.server_name(f)
    local seen = f.seen
    if not seen then return nil end
    if seen.transport ~= "tls" then return "" end
    -- a ClientHello the front could not read to its end (seen.alpn unset) says nothing for sure
    if seen.alpn == nil then return nil end
    return seen.sni or ""
end

-- the verified mTLS peer's URI SAN; a plaintext connection has none
function facts.peer_principal(f)
    return f.principal or ""
end

function facts.header()
    return nil, true
end

function facts.path()
    return nil
end

function facts.metadata()
    return nil
end

-- nil when the chain's filters let the connection on, else the name of the filter that denies it.
-- dst_ip / client_ip: addresses as text; seen: detect.lua's look at the first bytes, or nil;
-- principal: the verified mTLS peer's URI SAN (tcp_mtls.lua), nil for plaintext.
function _M.denied_by(filters, dst_ip, dst_port, client_ip, seen, principal)
    local f = {
        dst_bytes = rbac.parse_ip(dst_ip),
        dst_port = dst_port,
        peer_bytes = rbac.parse_ip(client_ip),
        seen = seen,
        principal = principal,
    }
    return rbac.denied_by(filters, f, facts)
end

return _M
