-- What the TLS relay (tls_origin.lua) reads, watched by APISIX's own etcd client in the stream
-- workers: the relay's clusters (/mesh_tls, written by agent/mtls/origination.ts), indexed by
-- loopback alias, and the workload identity (identity.lua, /mesh_identity/workload) with the mesh
-- roots as an OpenSSL store for verifying servers, built once per version.
local core = require("apisix.core")
local mesh_watch = require("apisix_mesh.mesh_watch")
local workload_identity = require("apisix_mesh.identity")
local x509 = require("resty.openssl.x509")
local x509_store = require("resty.openssl.x509.store")
local x509_crl = require("resty.openssl.x509.crl")

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
                    mode = { type = "string", enum = { "mtls", "tls", "plain", "refuse" } },
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
        -- DestinationRule SIMPLE (agent/mtls/simple-tls.ts)
        verify = { type = "string", enum = { "system", "file", "secret", "none" } },
        ca_file = { type = "string", pattern = "^/", maxLength = 4096 },
        crl_file = { type = "string", pattern = "^/", maxLength = 4096 },
        client_cert_file = { type = "string", pattern = "^/", maxLength = 4096 },
        client_key_file = { type = "string", pattern = "^/", maxLength = 4096 },
        -- credentialName: SDS secrets from istiod (tls_sds.lua)
        ca_secret = { type = "string", pattern = "^(kubernetes|configmap)://", maxLength = 1100 },
        client_secret = { type = "string", pattern = "^(kubernetes|configmap)://", maxLength = 1100 },
        auto_sni_host = { type = "string", minLength = 1, maxLength = 253 },
        auto_san_host = { type = "string", minLength = 1, maxLength = 253 },
    },
    required = { "id", "cluster", "endpoints" },
}

local _M = {}

local clusters
local by_alias, by_alias_version

function _M.init_worker()
    clusters = mesh_watch.watch("/mesh_tls", cluster_schema)
    workload_identity.init_worker()
    -- required here, not at the top: tls_sds.lua builds its stores with this module's root_store
    require("apisix_mesh.tls_sds").init_worker()
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

-- PEM blocks of a bundle (the roots may be several certificates), at most `max`.
local function pem_certificates(text, max)
    local out = {}
    for block in text:gmatch("%-%-%-%-%-BEGIN CERTIFICATE%-%-%-%-%-.-%-%-%-%-%-END CERTIFICATE%-%-%-%-%-") do
        out[#out + 1] = block
        if #out > max then
            break
        end
    end
    return out
end

-- A PEM bundle of roots as an OpenSSL store, or nil and why. `max`: how many certificates at most
-- (65 for the mesh roots; a system bundle holds about 150).
local function root_store(pem, max)
    local store, err = x509_store.new()
    if not store then
        return nil, err
    end
    max = max or 64
    local roots = pem_certificates(pem, max)
    if #roots == 0 then
        return nil, "it holds no root certificate"
    end
    if #roots > max then
        return nil, "it holds more than " .. max .. " certificates"
    end
    for _, block in ipairs(roots) do
        local root
        root, err = x509.new(block, "PEM")
        if not root then
            return nil, "a root certificate does not parse: " .. tostring(err)
        end
        local ok
        ok, err = store:add(root)
        if not ok then
            return nil, err
        end
    end
    return store
end

-- The workload identity ({chain, key, store, spiffe_id, not_after}), or nil and why.
function _M.identity()
    local identity, err = workload_identity.current()
    if not identity then
        return nil, err
    end
    -- the parsed identity is a new table per version: the store is built once for it
    if identity.store == nil and identity.store_err == nil then
        identity.store, identity.store_err = root_store(identity.roots_pem, 64)
        if not identity.store then
            core.log.error("apisix-mesh: the workload identity is not usable: ", identity.store_err)
        end
    end
    if not identity.store then
        return nil, identity.store_err
    end
    if identity.not_after and identity.not_after <= ngx.time() then
        return nil, "the workload certificate expired"
    end
    return identity
end

_M.root_store = root_store

local MAX_CRLS = 64

-- Adds the CRLs of a PEM text to a store (a caCrl file, a credentialName CA secret's ca.crl), checked
-- as Envoy does (its default validator: X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL): every
-- certificate of the server's chain needs a current CRL from its issuer, and none may be revoked.
-- Returns true, or nil and why.
function _M.add_crls(store, pem)
    local n = 0
    for block in pem:gmatch("%-%-%-%-%-BEGIN X509 CRL%-%-%-%-%-.-%-%-%-%-%-END X509 CRL%-%-%-%-%-") do
        n = n + 1
        if n > MAX_CRLS then
            return nil, "more than " .. MAX_CRLS .. " CRLs"
        end
        local crl, err = x509_crl.new(block, "PEM")
        if not crl then
            return nil, "CRL " .. n .. " does not parse: " .. tostring(err)
        end
        local ok
        ok, err = store:add(crl, true)
        if not ok then
            return nil, err
        end
    end
    if n == 0 then
        return nil, "no PEM CRL in it"
    end
    local flags = x509_store.verify_flags
    return store:set_flags(flags.X509_V_FLAG_CRL_CHECK, flags.X509_V_FLAG_CRL_CHECK_ALL)
end

return _M
