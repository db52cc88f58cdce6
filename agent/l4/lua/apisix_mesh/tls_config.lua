-- What the TLS relay (tls_origin.lua) reads, watched by APISIX's own etcd client in the stream
-- workers: the relay's clusters (/mesh_tls, written by agent/mtls/origination.ts), indexed by
-- loopback alias, and the workload identity (/mesh_identity/workload, the shared contract: the
-- certificate chain, key and mesh roots), parsed once per version.
local core = require("apisix.core")
local ngx_ssl = require("ngx.ssl")
local x509 = require("resty.openssl.x509")
local x509_store = require("resty.openssl.x509.store")

local matcher_schema = {
    type = "object",
    properties = {
        kind = { type = "string", enum = { "exact", "prefix", "suffix", "contains" } },
        value = { type = "string", maxLength = 4096 },
        ignore_case = { type = "boolean" },
    },
    required = { "kind", "value" },
}

local protocols_schema = { type = "array", maxItems = 16, items = { type = "string", minLength = 1, maxLength = 255 } }

local cluster_schema = {
    type = "object",
    properties = {
        id = { type = "string", maxLength = 64 },
        cluster = { type = "string", maxLength = 512 },
        endpoints = {
            type = "array", maxItems = 100000,
            items = {
                type = "object",
                properties = {
                    alias = { type = "string", pattern = "^127\\.(6[4-9]|[7-9][0-9]|1[01][0-9]|12[0-7])\\.[0-9]+\\.[0-9]+$" },
                    host = { type = "string", minLength = 1, maxLength = 256 },
                    port = { type = "integer", minimum = 1, maximum = 65535 },
                    mode = { type = "string", enum = { "mtls", "plain", "refuse" } },
                    reason = { type = "string", maxLength = 1024 },
                },
                required = { "alias", "host", "port", "mode" },
            },
        },
        sni = { type = "string", maxLength = 255 },
        san = { type = "array", maxItems = 1024, items = matcher_schema },
        alpn = protocols_schema,
        alpn_tcp = protocols_schema,
        connect_timeout_ms = { type = "integer", minimum = 1, maximum = 3600000 },
    },
    required = { "id", "cluster", "endpoints" },
}

local identity_schema = {
    type = "object",
    properties = {
        id = { type = "string", maxLength = 64 },
        cert_chain = { type = "string", minLength = 1, maxLength = 1048576 },
        key = { type = "string", minLength = 1, maxLength = 65536 },
        roots = { type = "string", minLength = 1, maxLength = 1048576 },
        spiffe_id = { type = "string", maxLength = 2048 },
        not_after = { type = "number" },
    },
    required = { "id", "cert_chain", "key", "roots" },
}

local _M = {}

local clusters, identities
local by_alias, by_alias_version
local identity, identity_version

function _M.init_worker()
    local err
    clusters, err = core.config.new("/mesh_tls", { automatic = true, item_schema = cluster_schema })
    if not clusters then
        core.log.error("apisix-mesh: cannot watch /mesh_tls: ", err)
    end
    identities, err = core.config.new("/mesh_identity", { automatic = true, item_schema = identity_schema })
    if not identities then
        core.log.error("apisix-mesh: cannot watch /mesh_identity: ", err)
    end
end

local function index(values)
    local out = {}
    for _, item in ipairs(values or {}) do
        local c = item.value
        if c then
            for _, e in ipairs(c.endpoints) do
                out[e.alias] = { cluster = c, endpoint = e }
            end
        end
    end
    return out
end

-- The cluster and endpoint a relay alias stands for, or nil.
function _M.lookup(alias)
    if not clusters or not clusters.values then
        return nil
    end
    if by_alias_version ~= clusters.conf_version then
        by_alias = index(clusters.values)
        by_alias_version = clusters.conf_version
    end
    return by_alias[alias]
end

-- PEM blocks of a bundle (the roots may be several certificates).
local function pem_certificates(text)
    local out = {}
    for block in text:gmatch("%-%-%-%-%-BEGIN CERTIFICATE%-%-%-%-%-.-%-%-%-%-%-END CERTIFICATE%-%-%-%-%-") do
        out[#out + 1] = block
        if #out > 64 then
            break
        end
    end
    return out
end

local function parse(value)
    local chain, err = ngx_ssl.parse_pem_cert(value.cert_chain)
    if not chain then
        return nil, "its certificate chain does not parse: " .. tostring(err)
    end
    local key
    key, err = ngx_ssl.parse_pem_priv_key(value.key)
    if not key then
        return nil, "its key does not parse" -- never the key's text
    end
    local store
    store, err = x509_store.new()
    if not store then
        return nil, err
    end
    local roots = pem_certificates(value.roots)
    if #roots == 0 then
        return nil, "it holds no root certificate"
    end
    for _, pem in ipairs(roots) do
        local root
        root, err = x509.new(pem, "PEM")
        if not root then
            return nil, "a root certificate does not parse: " .. tostring(err)
        end
        local ok
        ok, err = store:add(root)
        if not ok then
            return nil, err
        end
    end
    return { chain = chain, key = key, store = store, spiffe_id = value.spiffe_id, not_after = value.not_after }
end

-- The workload identity ({chain, key, store, spiffe_id, not_after}), or nil and why.
function _M.identity()
    if not identities or not identities.values then
        return nil, "the workload identity has not been read yet"
    end
    if identity_version ~= identities.conf_version then
        identity_version = identities.conf_version
        identity = nil
        local item = identities:get("workload")
        if item and item.value then
            local parsed, err = parse(item.value)
            if not parsed then
                core.log.error("apisix-mesh: the workload identity is not usable: ", err)
                identity = { err = err }
            else
                identity = parsed
            end
        end
    end
    if not identity then
        return nil, "no workload certificate (no CA configured, or none issued yet)"
    end
    if identity.err then
        return nil, identity.err
    end
    if identity.not_after and identity.not_after <= ngx.time() then
        return nil, "the workload certificate expired"
    end
    return identity
end

return _M
