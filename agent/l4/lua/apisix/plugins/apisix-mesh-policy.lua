-- The sidecar's HTTP policy: Istio's RequestAuthentication (Envoy's jwt_authn) then
-- AuthorizationPolicy (Envoy's HTTP RBAC), as an APISIX plugin the sidecar's APISIX loads from the
-- agent's Lua directory (`extra_lua_path`, listed in config.yaml's `plugins`). Each route of a
-- scope under policy carries the scope's filters as data (agent/policy/rbac-plugin.ts):
--   { jwt = { <jwt.ts jwtLuaData>, … }, rbac = { { name, action, policies = { { name, match } } }, … } }
-- checked here (schema, then the trees' shape), and turned into a check once per configuration
-- (a new route version is a new conf table): a busy route never recompiles, however many there are.
--
-- Envoy runs the RBAC filters before the fault filter and the router, so nothing that can answer a
-- request may run before them: APISIX's fault-injection (priority 11000) and redirect answer in the
-- rewrite phase. This plugin runs in the rewrite phase at priority 11500, after only plugins that
-- never answer (real-ip, request-id, …). JWT first (401 before any 403, and RBAC reads the verified
-- claims in the same request), then the RBAC filters in the chain's order; denied → 403
-- `RBAC: access denied` (Envoy's body), nothing reaches the upstream.
local core = require("apisix.core")
local rbac = require("apisix_mesh.rbac")
local rbac_check = require("apisix_mesh.rbac_check")
local jwt = require("apisix_mesh.jwt")
local facts = require("apisix_mesh.http_facts")
local find, sub, tostring, pcall, setmetatable = string.find, string.sub, tostring, pcall, setmetatable

local plugin_name = "apisix-mesh-policy"
local DENIED = "RBAC: access denied"

local schema = {
    type = "object",
    properties = {
        jwt = { type = "array", maxItems = 64, items = { type = "object" } },
        rbac = { type = "array", maxItems = 64, items = { type = "object" } },
    },
    required = { "rbac" },
    additionalProperties = false,
}

local _M = {
    version = 0.1,
    priority = 11500,
    name = plugin_name,
    schema = schema,
}

function _M.check_schema(conf)
    local ok, err = core.schema.check(schema, conf)
    if not ok then
        return false, err
    end
    err = rbac_check.filters(conf.rbac) or (conf.jwt and jwt.check(conf.jwt))
    if err then
        return false, err
    end
    return true
end

-- conf table → its check; weak keys: a replaced route's check goes with its conf
local compiled = setmetatable({}, { __mode = "k" })

local function compile(conf, ctx)
    local authn
    if conf.jwt and #conf.jwt > 0 then
        -- the JWT check parses keys into its data: its own copy, never APISIX's conf
        authn = jwt.new(core.table.deepcopy(conf.jwt))
    end
    local c = { rbac = conf.rbac, authn = authn }
    compiled[conf] = c
    core.log.info("apisix-mesh: policy compiled for route ", ctx.var.route_id or "?")
    return c
end

-- Envoy forwards the normalised path; nginx would forward the raw one
local function forward_normalised(ctx)
    local raw = ctx.var.real_request_uri or ngx.var.request_uri
    local q = find(raw, "?", 1, true)
    local raw_path = q and sub(raw, 1, q - 1) or raw
    local uri = ctx.var.uri
    local upstream = ctx.var.upstream_uri
    if raw_path ~= uri and (upstream == nil or upstream == "") then
        ctx.var.upstream_uri = core.utils.uri_safe_encode(uri) .. (ctx.var.is_args or "") .. (ctx.var.args or "")
    end
end

-- Envoy's jwt_authn runs before RBAC; a check that raises an error fails closed
local function authenticate(authn, ctx, f)
    local ok, code, body, www = pcall(authn, ctx, f)
    if ok then return code, body, www end
    core.log.error("apisix-mesh: JWT authentication raised an error, request refused: ", sub(tostring(code), 1, 200))
    return 401, "Jwt verification fails"
end

function _M.rewrite(conf, ctx)
    local c = compiled[conf] or compile(conf, ctx)
    local f = { ctx = ctx }
    if c.authn then
        local code, body, www = authenticate(c.authn, ctx, f)
        if code then
            if body ~= "" then core.response.set_header("Content-Type", "text/plain") end
            if www then core.response.set_header("WWW-Authenticate", www) end
            return code, body
        end
    end
    local ok, denied = pcall(rbac.denied_by, c.rbac, f, facts)
    if not ok then
        core.log.error("apisix-mesh: RBAC raised an error, request refused: ", sub(tostring(denied), 1, 200))
    end
    if not ok or denied then
        core.response.set_header("Content-Type", "text/plain")
        return 403, DENIED
    end
    forward_normalised(ctx)
end

return _M
