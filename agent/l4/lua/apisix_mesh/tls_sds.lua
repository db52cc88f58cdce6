-- The secrets istiod serves over SDS for a DestinationRule's credentialName, as the agent publishes
-- them under /mesh_sds (agent/mtls/sds-secrets.ts; validated there, NACKed when Envoy would reject
-- them): a client certificate (`kubernetes://<name>`: its chain and key) or CA certificates
-- (`kubernetes://<name>-cacert`), with the CRLs of the secret's `ca.crl` if it has one. Watched by APISIX's own etcd client in the stream workers (the TLS
-- relay, tls_origin.lua); each version of an object is parsed once, on first use, into a new object
-- (the relay's TLS session cache is keyed by it, so a rotated secret starts new sessions). A secret
-- that has not arrived, or of the wrong kind, or unusable: nil and why — the relay refuses the
-- connection. Key material is never logged.
local mesh_watch = require("apisix_mesh.mesh_watch")
local ssl = require("ngx.ssl")
local tls_config = require("apisix_mesh.tls_config")

local MAX_CERTS = 1024

local schema = {
    type = "object",
    properties = {
        id = { type = "string", maxLength = 64 },
        name = { type = "string", minLength = 1, maxLength = 1100 },
        kind = { type = "string", enum = { "certificate", "ca", "unusable" } },
        cert_chain = { type = "string", minLength = 1, maxLength = 512 * 1024 },
        key = { type = "string", minLength = 1, maxLength = 64 * 1024 },
        not_after = { type = "integer" },
        trusted_ca = { type = "string", minLength = 1, maxLength = 2 * 1024 * 1024 },
        crl = { type = "string", minLength = 1, maxLength = 8 * 1024 * 1024 },
        reason = { type = "string", maxLength = 2048 },
    },
    required = { "id", "name", "kind" },
}

local _M = {}

local items
local by_name, by_name_version
-- object (one per version) → { client = {chain, key} } | { store } | { err }
local parsed = setmetatable({}, { __mode = "k" })

function _M.init_worker()
    items = mesh_watch.watch("/mesh_sds", schema)
end

local function lookup(name)
    if not items or not items.values then
        return nil
    end
    if by_name_version ~= items.conf_version then
        by_name = {}
        for _, item in ipairs(items.values) do
            if item.value then
                by_name[item.value.name] = item.value
            end
        end
        by_name_version = items.conf_version
    end
    return by_name[name]
end

local function parse(value)
    if value.kind == "certificate" then
        local chain, err = ssl.parse_pem_cert(value.cert_chain or "")
        if not chain then
            return { err = "its certificate chain does not parse: " .. tostring(err) }
        end
        local key = ssl.parse_pem_priv_key(value.key or "")
        if not key then
            return { err = "its private key does not parse" }
        end
        return { client = { chain = chain, key = key } }
    elseif value.kind == "ca" then
        local store, err = tls_config.root_store(value.trusted_ca or "", MAX_CERTS)
        if not store then
            return { err = "its CA certificates are not usable: " .. tostring(err) }
        end
        if value.crl then
            local ok
            ok, err = tls_config.add_crls(store, value.crl)
            if not ok then
                return { err = "its CRL is not usable: " .. tostring(err) }
            end
        end
        return { store = store }
    end
    return { err = value.reason or "it cannot be used" }
end

local function get(name, kind, what)
    local value = lookup(name)
    if not value then
        return nil, "the SDS secret " .. name .. " (DestinationRule credentialName) has not come from istiod"
            .. " (no such secret in the proxy's namespace, the proxy may not list secrets there, or it"
            .. " reaches istiod without TLS)"
    end
    local p = parsed[value]
    if not p then
        p = parse(value)
        parsed[value] = p
    end
    if p.err then
        return nil, "the SDS secret " .. name .. " cannot be used: " .. p.err
    end
    if value.kind ~= kind then
        return nil, "the SDS secret " .. name .. " holds " .. (value.kind == "ca" and "CA certificates" or "a certificate")
            .. ", not " .. what
    end
    return p
end

-- The client certificate ({chain, key}) of a credentialName secret, or nil and why.
function _M.client(name)
    local p, err = get(name, "certificate", "a client certificate")
    return p and p.client, err
end

-- The trust store of a credentialName CA secret, or nil and why.
function _M.store(name)
    local p, err = get(name, "ca", "CA certificates")
    return p and p.store, err
end

return _M
