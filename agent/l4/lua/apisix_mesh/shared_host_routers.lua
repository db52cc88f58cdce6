-- APISIX's HTTP router (radixtree_host_uri, the default the sidecar keeps) builds one URI radixtree
-- per distinct host name. A mesh service's routes carry every name Envoy's virtual host answers to
-- (the short name, name.namespace, .svc, the FQDN with and without its dot, the ClusterIP: five or
-- more), all with the same routes, so each worker built five identical radixtrees per service —
-- ~3 KiB each, about two thirds of what a service costs a worker (BENCHMARKS.md).
--
-- While APISIX rebuilds its router, the radixtrees of one list of routes (the same route objects,
-- in the same order) are made once and shared by the hosts that have that list. Matching is
-- unchanged: a radixtree's dispatch depends on its routes alone, and each host keeps its own entry
-- in the host tree. Outside a rebuild nothing is shared, and what was remembered for a rebuild is
-- dropped when it ends. If APISIX's router no longer looks as this expects, an [error] line says
-- so and APISIX's behaviour is left as it was.
local core = require("apisix.core")

local _M = {}

local ROUTER = "radixtree_host_uri"

-- during a rebuild: the first route of a list → the lists seen with it and their radixtree
local memo

local function same_routes(a, b)
    if #a ~= #b then
        return false
    end
    for i = 1, #a do
        if a[i] ~= b[i] then
            return false
        end
    end
    return true
end

-- `new`: apisix.utils.router's; the radixtree of `routes`, shared within a rebuild.
local function shared_new(new, routes)
    local first = memo and type(routes) == "table" and routes[1]
    if not first then
        return new(routes)
    end
    local seen = memo[first]
    if seen then
        for _, entry in ipairs(seen) do
            if same_routes(entry.routes, routes) then
                return entry.instance
            end
        end
    else
        seen = {}
        memo[first] = seen
    end
    local instance = new(routes)
    seen[#seen + 1] = { routes = routes, instance = instance }
    return instance
end

-- In init_by_lua (hook.lua), HTTP subsystem.
function _M.install()
    local conf = core.config.local_conf()
    local name = conf and conf.apisix and conf.apisix.router and conf.apisix.router.http or ROUTER
    if name ~= ROUTER then
        return
    end
    local utils_router = require("apisix.utils.router")
    local host_uri = require("apisix.http.router." .. ROUTER)
    local services = require("apisix.http.service").services
    local new, match = utils_router.new, host_uri.match
    if type(new) ~= "function" or type(match) ~= "function" or type(services) ~= "function" then
        core.log.error("apisix-mesh: APISIX's ", ROUTER, " router is not as expected: each host keeps",
                       " its own radixtree (agent/l4/lua/apisix_mesh/shared_host_routers.lua)")
        return
    end
    utils_router.new = function(routes)
        return shared_new(new, routes)
    end
    -- APISIX rebuilds in match() when the routes' or the services' version changed (the same test)
    local routes_version, services_version = {}, {}   -- nothing seen yet: the first build shares too
    host_uri.match = function(api_ctx)
        local routes = host_uri.user_routes
        local _, sv = services()
        if not routes or (routes.conf_version == routes_version and sv == services_version) then
            return match(api_ctx)
        end
        routes_version, services_version = routes.conf_version, sv
        memo = {}
        local ok, a, b = pcall(match, api_ctx)
        memo = nil
        if not ok then
            error(a, 0)
        end
        return a, b
    end
end

return _M
