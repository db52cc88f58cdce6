-- The key of consistent hashing (APISIX's `chash` upstreams: Envoy's RING_HASH and MAGLEV clusters)
-- as Envoy's hash policies produce it. APISIX's chash falls back to the client address when the
-- key is missing; the client of an outbound request is the app in this pod, so every request went
-- to the one host that address hashes to. Envoy instead:
-- - for a cookie policy with a `ttl`, makes the cookie when the request has none: its value is the
--   hex xxHash64 of the client's address and port (Router::Filter::addDownstreamSetCookie), the
--   request is hashed on it and the response sets it (`Set-Cookie: name="value"; Max-Age=ttl;
--   Path=path; HttpOnly`), so the client sticks to that host from then on;
-- - otherwise, without a key, picks a random host.
-- Envoy also reads a cookie value without its double quotes (the form it sets); nginx's
-- $cookie_<name> keeps them, so they are taken off here too.
-- Runs before APISIX's server picker (hook.lua wraps balancer.pick_server), once per request.
local xxhash64 = require("apisix_mesh.xxhash64")

local sub, byte = string.sub, string.byte
local DQUOTE = byte('"')

local VAR_PREFIX = { cookie = "cookie_", header = "http_", vars = "" }

local _M = {}

--- a route's cookie policy with a ttl (set by the route's access-phase Lua, see
--- agent/translate/hash-cookie.ts): { name, path, ttl, attributes }
function _M.generate_cookie(api_ctx, policy)
    api_ctx.apisix_mesh_hash_cookie = policy
end

local function set_cookie_value(policy, value)
    local parts = { policy.name, '="', value, '"' }
    if policy.ttl > 0 then
        parts[#parts + 1] = "; Max-Age=" .. policy.ttl
    end
    if policy.path ~= "" then
        parts[#parts + 1] = "; Path=" .. policy.path
    end
    for _, a in ipairs(policy.attributes) do
        parts[#parts + 1] = a[2] == "" and "; " .. a[1] or "; " .. a[1] .. "=" .. a[2]
    end
    parts[#parts + 1] = "; HttpOnly"
    return table.concat(parts)
end

local function client_address()
    local ip = ngx.var.remote_addr or ""
    if ip:find(":", 1, true) then
        ip = "[" .. ip .. "]"
    end
    return ip .. ":" .. (ngx.var.remote_port or "0")
end

function _M.before_pick(api_ctx)
    local up = api_ctx.upstream_conf
    if not up or up.type ~= "chash" or api_ctx.apisix_mesh_hash_keyed then
        return
    end
    api_ctx.apisix_mesh_hash_keyed = true
    local prefix = VAR_PREFIX[up.hash_on or "vars"]
    if not prefix or type(up.key) ~= "string" then
        return
    end
    local name = prefix .. up.key
    local value = api_ctx.var[name]
    if type(value) == "table" then
        value = value[1]
    end
    if up.hash_on == "cookie" and value and #value >= 2 and byte(value, 1) == DQUOTE and byte(value, -1) == DQUOTE then
        value = sub(value, 2, -2)
        api_ctx.var[name] = value
    end
    if value ~= nil and value ~= "" then
        return
    end
    local policy = api_ctx.apisix_mesh_hash_cookie
    if up.hash_on == "cookie" and policy and policy.name == up.key then
        value = xxhash64.hex(client_address())
        api_ctx.apisix_mesh_set_cookie = set_cookie_value(policy, value)
    else
        -- no key: a random host, as Envoy (nginx's $request_id is 128 random bits)
        value = ngx.var.request_id
    end
    api_ctx.var[name] = value
end

--- the response of a request whose hash cookie was made here carries it
function _M.header_filter(api_ctx)
    local cookie = api_ctx and api_ctx.apisix_mesh_set_cookie
    if not cookie then
        return
    end
    local current = ngx.header["Set-Cookie"]
    if current == nil then
        ngx.header["Set-Cookie"] = cookie
    elseif type(current) == "table" then
        current[#current + 1] = cookie
        ngx.header["Set-Cookie"] = current
    else
        ngx.header["Set-Cookie"] = { current, cookie }
    end
end

return _M
