-- The sidecar's HTTP router: APISIX's `radixtree_host_uri` (the router the sidecar configures),
-- matched the same way but with its host lookup held in a Lua table.
--
-- APISIX keeps, besides one URI radixtree per host name, a second radixtree over every host name
-- (reversed, so that `*.example.com` is a prefix), and per name a route entry with two closures.
-- A mesh service answers to five or more names (istiod's virtual host domains: the FQDN with and
-- without its dot, name.namespace, .svc, the short name, the ClusterIP), so at 10,000 services a
-- worker held 50,000 such entries: 3.5 KiB of its live Lua heap per service, a third of what a
-- service cost a worker, and a reversed copy of the Host header was made on every request
-- (BENCHMARKS.md, "The host lookup as a table").
--
-- Here an exact name is one slot of a table (name → the URI radixtree of its routes), and the
-- radixtree of one list of routes (the same route objects in the same order: a service's names) is
-- made once and shared. Wildcard names (`*.example.com`) keep a radixtree over the reversed names,
-- as APISIX's. The order a request is tried in is APISIX's: its exact Host, then the wildcard names
-- from the longest suffix, then the routes without host names; a name whose routes do not match the
-- request falls through to the next, as in APISIX. The router is rebuilt, as APISIX rebuilds it,
-- when the routes' or the services' version changed.
--
-- If APISIX's router no longer looks as this expects, one [error] says so and APISIX's own router
-- is left in place.
local core = require("apisix.core")

local _M = {}

local ROUTER = "radixtree_host_uri"
local ASTERISK = string.byte("*")
local ipairs, pairs, type = ipairs, pairs, type
local str_byte, loadstring = string.byte, loadstring

-- set by install(): APISIX's pieces this router is made of
local new_radixtree, services, service_get, push_build_event

-- The radixtree entry of one APISIX route: what APISIX's own router makes of it, so that the
-- request context after a match is the one APISIX's later phases expect. nil when the route's
-- filter function does not load (logged, the route skipped: APISIX does the same).
local function route_entry(route)
    local value = route.value
    local filter_fun
    if value.filter_func then
        local chunk, err = loadstring("return " .. value.filter_func, "router#" .. tostring(value.id))
        if not chunk then
            core.log.error("failed to load filter function: ", err, " route id: ", value.id)
            return nil
        end
        filter_fun = chunk()
    end
    return {
        paths = value.uris or value.uri,
        methods = value.methods,
        priority = value.priority,
        remote_addrs = value.remote_addrs or value.remote_addr,
        vars = value.vars,
        filter_fun = filter_fun,
        handler = function(api_ctx, match_opts)
            api_ctx.matched_params = nil
            api_ctx.matched_route = route
            api_ctx.curr_req_matched = match_opts.matched
            api_ctx.real_curr_req_matched_path = match_opts.matched._path
        end,
    }
end

-- The names a route answers to: its own, else its APISIX service's; nil: any name.
local function names_of(route)
    local value = route.value
    if value.hosts then
        return value.hosts
    end
    if value.host then
        return { value.host }
    end
    if value.service_id then
        local service = service_get(value.service_id)
        if not service then
            -- as APISIX: a missing service does not keep the route from matching
            core.log.error("failed to fetch service configuration by id: ", value.service_id)
            return nil
        end
        return service.value.hosts
    end
    return nil
end

local function same_entries(a, b)
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

-- The URI radixtree of a list of entries, shared by the lists with the same entries in the same order.
local function shared_radixtree(made, entries)
    local seen = made[entries[1]]
    if seen then
        for _, m in ipairs(seen) do
            if same_entries(m.entries, entries) then
                return m.radixtree
            end
        end
    else
        seen = {}
        made[entries[1]] = seen
    end
    local radixtree = new_radixtree(entries)
    seen[#seen + 1] = { entries = entries, radixtree = radixtree }
    return radixtree
end

local function wildcard_entry(name, radixtree)
    return {
        paths = name:reverse(),
        filter_fun = function(vars, opts, ...)
            return radixtree:dispatch(vars.uri, opts, ...)
        end,
        handler = function(api_ctx, match_opts)
            api_ctx.real_curr_req_matched_host = match_opts.matched._path
        end,
    }
end

-- routes (APISIX's route items) → { exact = {name → radixtree}, wildcard = radixtree|nil, any = radixtree }
local function build(routes)
    local by_name, any = {}, {}
    for _, route in ipairs(routes or {}) do
        local value = type(route) == "table" and route.value
        if type(value) == "table" and (not value.status or value.status == 1) then
            local entry = route_entry(route)
            if entry then
                local names = names_of(route)
                if names == nil then
                    any[#any + 1] = entry
                else
                    for _, name in ipairs(names) do
                        local entries = by_name[name]
                        if entries then
                            entries[#entries + 1] = entry
                        else
                            by_name[name] = { entry }
                        end
                    end
                end
            end
        end
    end
    local made, exact, wildcards = {}, {}, {}
    for name, entries in pairs(by_name) do
        local radixtree = shared_radixtree(made, entries)
        if str_byte(name) == ASTERISK then
            wildcards[#wildcards + 1] = wildcard_entry(name, radixtree)
        else
            exact[name] = radixtree
        end
    end
    push_build_event(routes)
    return {
        exact = exact,
        wildcard = #wildcards > 0 and new_radixtree(wildcards) or nil,
        any = new_radixtree(any),
    }
end

local built, routes_version, services_version

local function matching(api_ctx)
    local var = api_ctx.var
    local host, uri = var.host, var.uri
    local match_opts = core.tablepool.fetch("route_match_opts", 0, 16)
    match_opts.method = var.request_method
    match_opts.remote_addr = var.remote_addr
    match_opts.vars = var
    match_opts.host = host
    match_opts.matched = core.tablepool.fetch("matched_route_record", 0, 4)

    local radixtree = built.exact[host]
    local ok = radixtree and radixtree:dispatch(uri, match_opts, api_ctx, match_opts)
    if ok then
        api_ctx.curr_req_matched._host = host
        api_ctx.real_curr_req_matched_path = nil
    elseif built.wildcard then
        ok = built.wildcard:dispatch(host:reverse(), match_opts, api_ctx, match_opts)
        if ok then
            -- the outer match wrote the host's pattern over the URI's: APISIX's router puts both back
            api_ctx.curr_req_matched._path = api_ctx.real_curr_req_matched_path
            api_ctx.curr_req_matched._host = api_ctx.real_curr_req_matched_host:reverse()
            api_ctx.real_curr_req_matched_path = nil
            api_ctx.real_curr_req_matched_host = nil
        end
    end
    if not ok then
        ok = built.any:dispatch(uri, match_opts, api_ctx, match_opts)
    end
    core.tablepool.release("route_match_opts", match_opts)
    return ok
end

local function match(router)
    return function(api_ctx)
        local routes = router.user_routes
        local _, sv = services()
        if not built or routes.conf_version ~= routes_version or sv ~= services_version then
            built = build(routes.values)
            routes_version, services_version = routes.conf_version, sv
        end
        return matching(api_ctx)
    end
end

-- In init_by_lua (hook.lua), HTTP subsystem: replaces the match of APISIX's radixtree_host_uri
-- router when that is the configured one.
function _M.install()
    local conf = core.config.local_conf()
    local name = conf and conf.apisix and conf.apisix.router and conf.apisix.router.http or ROUTER
    if name ~= ROUTER then
        return
    end
    local router = require("apisix.http.router." .. ROUTER)
    local service = require("apisix.http.service")
    local event = require("apisix.core.event")
    local new = require("apisix.utils.router").new
    if type(router.match) ~= "function" or type(router.matching) ~= "function" or type(new) ~= "function"
        or type(service.services) ~= "function" or type(service.get) ~= "function"
        or type(event.push) ~= "function" or type(event.CONST) ~= "table" or not event.CONST.BUILD_ROUTER then
        core.log.error("apisix-mesh: APISIX's ", ROUTER, " router is not as expected: its own host",
                       " lookup stays (agent/l4/lua/apisix_mesh/host_router.lua)")
        return
    end
    new_radixtree, services, service_get = new, service.services, service.get
    push_build_event = function(routes)
        event.push(event.CONST.BUILD_ROUTER, routes)
    end
    router.match = match(router)
    router.matching = matching
end

return _M
