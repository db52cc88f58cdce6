-- The client certificate of a DestinationRule MUTUAL with files (istiod's `file-cert:<cert>~<key>`,
-- agent/mtls/upstream-tls.ts): the chain and key files in the APISIX container, parsed for the
-- relay's handshake (ngx.ssl cdata, as the workload identity). Read by the worker that needs them
-- (bounded, tls_roots.read_file) and kept per pair of paths for REFRESH seconds, as tls_roots.lua
-- does for CA files: a rotated pair applies within that time. The parsed object stays the same
-- while both files do (the relay's session cache is keyed by it). Key material is never logged.
local ssl = require("ngx.ssl")
local tls_roots = require("apisix_mesh.tls_roots")

local REFRESH = 60
local RETRY = 5

-- "<cert>\n<key>" → { chain, key, cert_pem, key_pem, err, at }
local cache = {}

local _M = {}

local function parse(cert_pem, key_pem)
    local chain, err = ssl.parse_pem_cert(cert_pem)
    if not chain then
        return nil, "the client certificate does not parse: " .. tostring(err)
    end
    local key = ssl.parse_pem_priv_key(key_pem)
    if not key then
        return nil, "the private key does not parse"
    end
    return { chain = chain, key = key }
end

-- { chain, key } for the pair of files, or nil and why.
function _M.load(cert_path, key_path)
    local id = cert_path .. "\n" .. key_path
    local now = ngx.now()
    local c = cache[id]
    if c and now - c.at < (c.parsed and REFRESH or RETRY) then
        return c.parsed, c.err
    end
    local cert_pem, key_pem, err
    cert_pem, err = tls_roots.read_file(cert_path)
    if cert_pem then
        key_pem, err = tls_roots.read_file(key_path)
        if not key_pem then
            err = "cannot read the private key " .. key_path .. ": " .. tostring(err)
        end
    else
        err = "cannot read the client certificate " .. cert_path .. ": " .. tostring(err)
    end
    local parsed
    if key_pem and c and c.parsed and c.cert_pem == cert_pem and c.key_pem == key_pem then
        parsed = c.parsed
    elseif key_pem then
        parsed, err = parse(cert_pem, key_pem)
    end
    cache[id] = { parsed = parsed, err = err, cert_pem = parsed and cert_pem, key_pem = parsed and key_pem, at = now }
    return parsed, err
end

return _M
