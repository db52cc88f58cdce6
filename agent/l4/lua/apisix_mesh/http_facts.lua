-- What an HTTP request tells RBAC (rbac.lua's `facts`), read lazily, each once per request, into
-- the per-request table `f` (`f.ctx`: APISIX's request context):
-- - the path is nginx's `$uri`: percent-decoded, dot segments resolved, slashes merged — the form
--   Envoy's `normalize_path` + `merge_slashes` gives, and more (see docs/security.md); a
--   path holding a backslash (which Envoy turns into `/`, nginx does not) is unknown;
-- - the remote address (Envoy's `remote_ip`) comes from X-Forwarded-For when it is present, which
--   the sidecar does not parse: unknown then; the peer (`direct_remote_ip`) is `$remote_addr` (the
--   hand-off sets it to the real client); the destination is `$connection_original_dst`;
-- - JWT metadata is what the JWT check left in `f.jwt_meta`;
-- - the server name (SNI) is unknown;
-- - the mTLS peer's principal is `$apisix_mesh_peer_principal` (empty for plaintext: no principal).
local rbac = require("apisix_mesh.rbac")
local cjson_mod = require("cjson.safe")
local array_mt = cjson_mod.array_mt
local get_headers = ngx.req.get_headers
local find, match, concat = string.find, string.match, table.concat
local ipairs, type, tonumber, getmetatable = ipairs, type, tonumber, getmetatable

local _M = {}

-- the verified mTLS peer's URI SAN (hook.lua sets it for the TLS listener); "" without mTLS
function _M.peer_principal(f)
    local p = f.ctx.var.apisix_mesh_peer_principal
    return type(p) == "string" and p or ""
end

function _M.path(f)
    if f.path == nil then
        local uri = f.ctx.var.uri
        f.path = (type(uri) == "string" and not find(uri, "\\", 1, true)) and uri or false
    end
    return f.path or nil
end

function _M.destination(f)
    if f.dst_port == nil then
        f.dst_port = false
        local dst = f.ctx.var.connection_original_dst
        if type(dst) == "string" then
            local host, port = match(dst, "^%[?([^%]]+)%]?:(%d+)$")
            if host then f.dst_ip, f.dst_port = rbac.parse_ip(host), tonumber(port) end
        end
    end
    return f.dst_ip, f.dst_port or nil
end

function _M.address(f, of)
    if of == "destination" then return (_M.destination(f)) end
    if f.peer == nil then f.peer = rbac.parse_ip(f.ctx.var.remote_addr) or false end
    if of == "remote" and f.ctx.var.http_x_forwarded_for ~= nil then return nil end
    return f.peer or nil
end

-- a header's value (repeated ones joined by ","); true as the second value when it cannot be known
function _M.header(f, src)
    local pseudo = src.pseudo
    if pseudo == "method" then return f.ctx.var.request_method end
    if pseudo == "authority" then return f.ctx.var.http_host end
    if pseudo == "scheme" then return f.ctx.var.scheme end
    if pseudo == "path" then
        local p = _M.path(f)
        if not p then return nil, true end
        if f.ctx.var.is_args == "?" then return p .. "?" .. (f.ctx.var.args or "") end
        return p
    end
    if not f.headers then f.headers = get_headers(0) end
    local v = f.headers[src.h]
    if type(v) == "table" then return concat(v, ",") end
    return v
end

-- the value at a path of the JWT filter's metadata (nil: absent, as Envoy's metadataValue)
function _M.metadata(f, path)
    local v = f.jwt_meta
    for _, k in ipairs(path) do
        if type(v) ~= "table" or getmetatable(v) == array_mt then return nil end
        v = v[k]
    end
    return v
end

function _M.server_name()
    return nil
end

return _M
