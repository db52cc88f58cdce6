-- Envoy's outlier detection for the HTTP upstreams whose cluster has one (the agent writes the
-- policy as the upstream's `apisix-mesh-outlier` label: agent/translate/outlier-detection.ts says
-- why APISIX's health checks cannot do it). State is per upstream node, in a dictionary shared by
-- the workers (`apisix_mesh_outlier`, declared in the sidecar's APISIX config):
--   "<upstream> <addr> 5" / " g"  consecutive 5xx / gateway failures (502, 503, 504; nginx answers
--                                 502 for a failed connection and 504 for a timeout: Envoy counts
--                                 those local-origin failures as gateway errors too)
--   "<upstream> <addr> u"         ejected until (ngx.now()), kept after as the time it came back
--   "<upstream> <addr> n"         how many times it was ejected (the ejection-time multiplier)
-- Each try of the request is counted ($upstream_addr/$upstream_status) as the response leaves; the picker
-- (hook.lua wraps APISIX's pick_server) sees only the nodes not ejected.
local _M = {}

local DICT = "apisix_mesh_outlier"
local LABEL = "apisix-mesh-outlier"

local floor, min, max = math.floor, math.min, math.max
local policies, cached_count = {}, 0   -- parsed labels by their text
local no_dict_logged = false

local function dict()
    local d = ngx.shared[DICT]
    if not d and not no_dict_logged then
        no_dict_logged = true
        ngx.log(ngx.ERR, "apisix-mesh: no shared dictionary ", DICT, ": outlier detection is not enforced")
    end
    return d
end

--- the upstream's policy (a table of numbers), or nil
function _M.policy(up)
    local labels = up and up.labels
    local text = labels and labels[LABEL]
    if type(text) ~= "string" then
        return nil
    end
    local cached = policies[text]
    if cached ~= nil then
        return cached or nil
    end
    if cached_count >= 1024 then
        policies, cached_count = {}, 0
    end
    cached_count = cached_count + 1
    local p = {}
    for k, v in text:gmatch("(%w+)=([%d.]+)") do
        p[k] = tonumber(v)
    end
    for _, k in ipairs({ "c5", "e5", "cg", "eg", "base", "max", "int", "pct", "one", "panic" }) do
        if not p[k] then
            ngx.log(ngx.ERR, "apisix-mesh: outlier policy without ", k, ": not enforced")
            policies[text] = false
            return nil
        end
    end
    policies[text] = p
    return p
end

local function address(node)
    local host = node.host
    if host:find(":", 1, true) and host:sub(1, 1) ~= "[" then
        host = "[" .. host .. "]"
    end
    return host .. ":" .. node.port
end

local function key_of(up, api_ctx)
    return tostring(up.id or (api_ctx and api_ctx.upstream_key) or "")
end

local function ejected(d, prefix, now)
    local until_time = d:get(prefix .. " u")
    return until_time and until_time > now
end

--- the nodes not ejected now; `all` when none is, or when fewer than the panic threshold are left
--- (Envoy then balances over every host); an empty table when every host is ejected
function _M.available(up, p, now, api_ctx)
    local d = dict()
    if not d then
        return up.nodes
    end
    local id = key_of(up, api_ctx)
    local left, out = {}, 0
    for _, node in ipairs(up.nodes) do
        if ejected(d, id .. " " .. address(node), now) then
            out = out + 1
        else
            left[#left + 1] = node
        end
    end
    if out == 0 or 100 * #left / #up.nodes < p.panic then
        return up.nodes
    end
    return left
end

local function eject(d, p, id, nodes, addr, now, why)
    local prefix = id .. " " .. addr
    if ejected(d, prefix, now) then
        return false
    end
    local active = 0
    for _, node in ipairs(nodes) do
        if ejected(d, id .. " " .. address(node), now) then
            active = active + 1
        end
    end
    if not (p.one == 1 and active == 0) and 100 * (active + 1) / #nodes > p.pct then
        return false   -- max_ejection_percent: Envoy's ejections_overflow
    end
    -- the multiplier goes down by one for every interval the host spent back in the pool
    local times = d:get(prefix .. " n") or 0
    local back = d:get(prefix .. " u")
    if back and times > 0 then
        times = max(0, times - floor((now - back) / p.int))
    end
    times = times + 1
    local duration = min(p.base * times, p.max)
    d:set(prefix .. " n", times)
    d:set(prefix .. " u", now + duration)
    ngx.log(ngx.WARN, "apisix-mesh: outlier detection ejects ", addr, " of upstream ", id, " for ",
            duration, "s (", why, ", ejection ", times, ")")
    return true
end

local function enforced(percent)
    return percent >= 100 or (percent > 0 and math.random() * 100 < percent)
end

--- one try's answer from the node at `addr`; `nodes`: all the upstream's nodes
function _M.record(up, p, nodes, addr, status, now, api_ctx)
    local d = dict()
    if not d then
        return
    end
    local id = key_of(up, api_ctx)
    local prefix = id .. " " .. addr
    if status < 500 or status > 599 then
        d:delete(prefix .. " 5")
        d:delete(prefix .. " g")
        return
    end
    if status == 502 or status == 503 or status == 504 then
        local count = d:incr(prefix .. " g", 1, 0)
        if p.cg > 0 and count == p.cg then
            d:delete(prefix .. " g")
            if enforced(p.eg) then
                eject(d, p, id, nodes, addr, now, "consecutive gateway failures")
            end
        end
    else
        d:delete(prefix .. " g")
    end
    local count = d:incr(prefix .. " 5", 1, 0)
    if p.c5 > 0 and count == p.c5 then
        d:delete(prefix .. " 5")
        if enforced(p.e5) then
            eject(d, p, id, nodes, addr, now, "consecutive 5xx")
        end
    end
end

--- Before APISIX's picker: the request sees the nodes not ejected (a copy of the upstream, under a
--- version of its own so that APISIX's picker cache keeps one picker per set). Returns false when
--- every host is ejected.
function _M.before_pick(api_ctx)
    local up = api_ctx.upstream_conf
    if not up or api_ctx.apisix_mesh_outlier_nodes then
        return true
    end
    local p = _M.policy(up)
    if not p then
        return true
    end
    api_ctx.apisix_mesh_outlier_nodes = up.nodes
    local left = _M.available(up, p, ngx.now(), api_ctx)
    if left == up.nodes then
        return true
    end
    if #left == 0 then
        return false
    end
    local copy, names = {}, {}
    for k, v in pairs(up) do
        copy[k] = v
    end
    copy.nodes = left
    for i, node in ipairs(left) do
        names[i] = address(node)
    end
    api_ctx.upstream_conf = copy
    api_ctx.upstream_version = tostring(api_ctx.upstream_version) .. "#up:" .. table.concat(names, ",")
    return true
end

-- the entries of an `$upstream_*` list, in place: nginx writes "a, b : c" (" : " between upstream
-- requests of one request: an internal redirect, the retry locations' restart) and leaves an
-- entry empty for a try that had no peer (a balancer that ended the request), so the addresses
-- and the statuses line up only when empty entries are kept
local function split(list)
    local out = {}
    for item in ((list or ""):gsub(" : ", ",") .. ","):gmatch("([^,]*),") do
        out[#out + 1] = item:match("^%s*(.-)%s*$")
    end
    return out
end

--- each try's { addr, status } from `$upstream_addr` and `$upstream_status`
function _M.tries(addr_list, status_list)
    local addrs, statuses, out = split(addr_list), split(status_list), {}
    for i, addr in ipairs(addrs) do
        local status = tonumber(statuses[i])
        if addr ~= "" and status then
            out[#out + 1] = { addr = addr, status = status }
        end
    end
    return out
end

--- Every try of the request, counted against its node: when the response headers leave (before
--- the client can send its next request, which must see an ejection its answer caused), or in
--- the log phase when no header went out.
function _M.count(api_ctx)
    local up = api_ctx and api_ctx.upstream_conf
    local p = up and _M.policy(up)
    if not p or api_ctx.apisix_mesh_outlier_counted then
        return
    end
    api_ctx.apisix_mesh_outlier_counted = true
    local nodes = api_ctx.apisix_mesh_outlier_nodes or up.nodes
    local known = {}
    for _, node in ipairs(nodes) do
        known[address(node)] = true
    end
    local now = ngx.now()
    for _, try in ipairs(_M.tries(ngx.var.upstream_addr, ngx.var.upstream_status)) do
        if known[try.addr] then
            _M.record(up, p, nodes, try.addr, try.status, now, api_ctx)
        end
    end
end

return _M
