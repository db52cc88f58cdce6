-- Inbound mTLS with Istio's semantics on APISIX's loopback TLS listener (the L4 front hands it the
-- connections whose filter chain terminates Istio's mTLS; see l4.lua and hook.lua).
--
-- The handshake: the workload certificate chain is presented whatever the SNI (Istio clients send
-- `outbound_.<port>_.<subset>_.<host>`; APISIX's SNI router, which would need an SSL object per
-- name, is bypassed for this port), and a client certificate is required and verified against the
-- mesh roots of the current identity object, in the handshake (OpenSSL's chain verification;
-- missing → certificate_required, foreign CA → unknown_ca): nothing of an unverified peer reaches
-- the routes. The roots are read per handshake from the object the agent rewrites on every
-- renewal, so a root rotation (istiod then sends old and new roots) takes effect without a reload,
-- which nginx's `ssl_client_certificate <file>` would need. No identity → the handshake fails: the
-- listener never serves another certificate.
--
-- Per request: the peer's URI SAN (the principal RBAC's `authenticated` and Istio's peer principal
-- read) and the `x-forwarded-client-cert` Envoy would send (By, Hash, Subject, URI), computed once
-- per peer certificate.
local core = require("apisix.core")
local ssl = require("ngx.ssl")
local x509 = require("resty.openssl.x509")
local lrucache = require("resty.lrucache")
local identity = require("apisix_mesh.identity")

-- Istio: root → intermediate(s) → leaf; room for a few intermediates
local VERIFY_DEPTH = 8
local MAX_RAW_CERT = 64 * 1024

local _M = {}

local peers = lrucache.new(512)

-- ssl_certificate_by_lua for the mesh TLS port.
function _M.ssl_certificate()
    local id, why = identity.current()
    if not id then
        core.log.warn("apisix-mesh: inbound mTLS handshake refused: ", why)
        return ngx.exit(ngx.ERROR)
    end
    local ok, err = ssl.clear_certs()
    if ok then
        ok, err = ssl.set_cert(id.chain)
    end
    if ok then
        ok, err = ssl.set_priv_key(id.key)
    end
    if ok then
        ok, err = ssl.verify_client(id.roots, VERIFY_DEPTH, nil, true)
    end
    if not ok then
        core.log.error("apisix-mesh: inbound mTLS handshake refused: cannot set the workload certificate: ", err)
        return ngx.exit(ngx.ERROR)
    end
end

local function hex(bytes)
    return (bytes:gsub(".", function(c) return string.format("%02x", string.byte(c)) end))
end

-- Envoy quotes the subject; a quote inside is escaped
local function quoted(s)
    return '"' .. s:gsub('[\\"]', "\\%0") .. '"'
end

local function describe(pem)
    local cert, err = x509.new(pem, "PEM")
    if not cert then
        return nil, err
    end
    local digest
    digest, err = cert:digest("sha256")
    if not digest then
        return nil, err
    end
    local uris, dns = {}, {}
    local names = cert:get_subject_alt_name()
    if names then
        local next_name = names:each()
        while true do
            local kind, value = next_name()
            if not kind then break end
            if kind == "URI" and #uris < 16 then
                uris[#uris + 1] = value
            elseif kind == "DNS" and #dns < 16 then
                dns[#dns + 1] = value
            end
        end
    end
    -- Istio's certificates have an empty subject (Subject=""); another one is written as
    -- lua-resty-openssl prints it (Envoy writes RFC 2253)
    local subject = cert:get_subject_name()
    local subject_text = subject and subject:tostring() or ""
    local details = ";Hash=" .. hex(digest) .. ";Subject=" .. quoted(subject_text)
    -- Istio's set_current_client_cert_details: Subject, URI (`URI=` when there is none), DNS
    for _, uri in ipairs(uris) do
        details = details .. ";URI=" .. uri
    end
    if #uris == 0 then
        details = details .. ";URI="
    end
    for _, name in ipairs(dns) do
        details = details .. ";DNS=" .. name
    end
    return { principal = uris[1] or "", uris = uris, details = details }
end

-- The verified peer of this TLS request: { principal, details }, or nil and why.
function _M.peer()
    if ngx.var.ssl_client_verify ~= "SUCCESS" then
        return nil, "client certificate not verified: " .. tostring(ngx.var.ssl_client_verify)
    end
    local pem = ngx.var.ssl_client_raw_cert
    if not pem or pem == "" or #pem > MAX_RAW_CERT then
        return nil, "no usable client certificate"
    end
    local peer = peers:get(pem)
    if not peer then
        local err
        peer, err = describe(pem)
        if not peer then
            return nil, "client certificate does not parse: " .. tostring(err)
        end
        peers:set(pem, peer)
    end
    return peer
end

-- Whether one of the peer's URI SANs matches one of the chain's SAN matchers (the hand-off
-- record's form, chains.lua: "e:<exact>" / "p:<prefix>", space-separated); no matchers: any peer.
function _M.peer_matches(peer, peer_sans)
    if not peer_sans then
        return true
    end
    for entry in peer_sans:gmatch("%S+") do
        local kind, value = entry:sub(1, 1), entry:sub(3)
        for _, uri in ipairs(peer.uris) do
            if (kind == "e" and uri == value) or (kind == "p" and uri:sub(1, #value) == value) then
                return true
            end
        end
    end
    return false
end

-- x-forwarded-client-cert as Envoy's sidecar sends it for an mTLS peer
function _M.xfcc(peer)
    local id = identity.current()
    return "By=" .. (id and id.spiffe_id or "") .. peer.details
end

-- Envoy's APPEND_FORWARD: the request's header (repeated headers joined, as one list) then ","
-- and this sidecar's element; no header or an empty one: the element alone.
function _M.append_xfcc(existing, peer)
    if type(existing) == "table" then
        existing = table.concat(existing, ",")
    end
    local current = _M.xfcc(peer)
    if not existing or existing == "" then
        return current
    end
    return existing .. "," .. current
end

return _M
