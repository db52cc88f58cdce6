-- The workload identity the agent publishes at /mesh_identity/workload (agent/identity/apisix-identity.ts):
-- the certificate chain Istio's CA issued, its key, the mesh roots and the SPIFFE id. Watched by
-- APISIX's own etcd client in each subsystem that uses it — the HTTP workers (the inbound mTLS
-- listener presents it and verifies peers against its roots) and the stream workers (the outbound
-- TLS relay, tls_config.lua); parsed once per version of the object. Key material is never logged.
local core = require("apisix.core")
local mesh_watch = require("apisix_mesh.mesh_watch")
local ssl = require("ngx.ssl")

local MAX_PEM = 256 * 1024

local schema = {
    type = "object",
    properties = {
        id = { type = "string", maxLength = 64 },
        cert_chain = { type = "string", minLength = 1, maxLength = MAX_PEM },
        key = { type = "string", minLength = 1, maxLength = 64 * 1024 },
        roots = { type = "string", minLength = 1, maxLength = MAX_PEM },
        spiffe_id = { type = "string", minLength = 1, maxLength = 2048 },
        not_after = { type = "integer" },
    },
    required = { "id", "cert_chain", "key", "roots", "spiffe_id" },
}

local _M = {}

local items
local parsed, parsed_version, parse_error

function _M.init_worker()
    items = mesh_watch.watch("/mesh_identity", schema)
end

local function parse(value)
    local chain, err = ssl.parse_pem_cert(value.cert_chain)
    if not chain then
        return nil, "certificate chain: " .. tostring(err)
    end
    local key
    key, err = ssl.parse_pem_priv_key(value.key)
    if not key then
        -- never quote the key or the library's view of it
        return nil, "private key does not parse"
    end
    local roots
    roots, err = ssl.parse_pem_cert(value.roots)
    if not roots then
        return nil, "roots: " .. tostring(err)
    end
    -- roots_pem: for the relay's OpenSSL store, built from it where it is needed (tls_config.lua)
    return { chain = chain, key = key, roots = roots, roots_pem = value.roots, spiffe_id = value.spiffe_id, not_after = value.not_after }
end

-- The parsed identity, or nil and why there is none (no CA, not issued yet, unusable).
function _M.current()
    if not items or not items.values then
        return nil, "the identity is not loaded yet"
    end
    if parsed_version ~= items.conf_version then
        parsed, parse_error = nil, nil
        local item = items:get("workload")
        if not item or not item.value then
            parse_error = "no workload certificate"
        else
            parsed, parse_error = parse(item.value)
            if not parsed then
                core.log.error("apisix-mesh: the workload certificate is unusable: ", parse_error)
            end
        end
        parsed_version = items.conf_version
    end
    return parsed, parse_error
end

return _M
