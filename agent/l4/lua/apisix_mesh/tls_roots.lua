-- Trust stores for DestinationRule SIMPLE (tls_origin.lua, agent/mtls/simple-tls.ts): the system
-- bundle of the APISIX image (istiod's `file-root:system`; the first of the paths Istio's agent
-- and Go look at) or a CA file in the APISIX container (`file-root:<path>`, the DestinationRule's
-- caCertificates). Read by the worker that needs it (a blocking read, bounded to MAX_BYTES) and
-- kept per path for REFRESH seconds: a rewritten file applies within that time, as Istio's agent
-- watches the file. The store object stays the same while the content does (the relay's TLS
-- session cache is keyed by it). Absent, unreadable, empty or malformed → no store: the relay
-- refuses the connection, never skips the check. A DestinationRule's caCrl (a CRL file) is read and
-- refreshed the same way, with its CA file: absent, unreadable or a CRL that does not parse → no store.
local tls_config = require("apisix_mesh.tls_config")

local SYSTEM_BUNDLES = {
    "/etc/ssl/certs/ca-certificates.crt", -- Debian, Ubuntu (the APISIX image)
    "/etc/pki/tls/certs/ca-bundle.crt", -- Fedora, RHEL 6
    "/etc/ssl/ca-bundle.pem", -- openSUSE
    "/etc/pki/tls/cacert.pem", -- OpenELEC
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", -- CentOS, RHEL 7
    "/etc/ssl/cert.pem", -- Alpine
}
local MAX_BYTES = 2 * 1024 * 1024
local MAX_CERTS = 1024
local REFRESH = 60
-- a failure is retried sooner: a volume mounted a moment after APISIX started
local RETRY = 5

-- path (and CRL path) → { store, err, pem, crl, at }
local cache = {}

local _M = {}

local function read_bounded(path)
    local f, err = io.open(path, "rb")
    if not f then
        return nil, err
    end
    local data = f:read(MAX_BYTES + 1)
    f:close()
    if not data or #data == 0 then
        return nil, "the file is empty"
    end
    if #data > MAX_BYTES then
        return nil, "the file is larger than " .. MAX_BYTES .. " bytes"
    end
    return data
end

local function system_bundle()
    for _, path in ipairs(SYSTEM_BUNDLES) do
        local f = io.open(path, "rb")
        if f then
            f:close()
            return path
        end
    end
    return nil
end

-- A file's content (at most MAX_BYTES), or nil and why; for tls_client_cert.lua too.
_M.read_file = read_bounded

-- The store for `verify` ("system" | "file", with `file`), with the CRLs of `crl_file` (the
-- DestinationRule's caCrl) if given, or nil and why; then what it was read from.
function _M.store(verify, file, crl_file)
    local path = verify == "system" and system_bundle() or (verify == "file" and file) or nil
    if not path then
        return nil, verify == "system" and "no system CA bundle in the APISIX container (looked at "
            .. table.concat(SYSTEM_BUNDLES, ", ") .. ")" or "no CA certificates configured"
    end
    local id = crl_file and path .. "\n" .. crl_file or path
    local now = ngx.now()
    local c = cache[id]
    if c and now - c.at < (c.store and REFRESH or RETRY) then
        return c.store, c.err, path
    end
    local pem, err = read_bounded(path)
    local crl, store
    if not pem then
        err = "cannot use the CA certificates in " .. path .. ": " .. tostring(err)
    elseif crl_file then
        crl, err = read_bounded(crl_file)
        if not crl then
            err = "cannot read the CRL file " .. crl_file .. ": " .. tostring(err)
            pem = nil
        end
    end
    if pem and c and c.store and c.pem == pem and c.crl == crl then
        store = c.store
    elseif pem then
        store, err = tls_config.root_store(pem, MAX_CERTS)
        if not store then
            err = "cannot use the CA certificates in " .. path .. ": " .. tostring(err)
        elseif crl then
            local ok
            ok, err = tls_config.add_crls(store, crl)
            if not ok then
                store, err = nil, "cannot use the CRL file " .. crl_file .. ": " .. tostring(err)
            end
        end
    end
    if not store then
        pem, crl = nil, nil
    end
    cache[id] = { store = store, err = err, pem = pem, crl = crl, at = now }
    return store, err, path
end

return _M
