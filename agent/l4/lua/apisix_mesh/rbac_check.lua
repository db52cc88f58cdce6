-- The shape of the RBAC trees agent/policy/rbac.ts writes, checked before rbac.lua walks them:
-- the HTTP policy plugin's check_schema and the L4 front's listener check use it, so a tree that
-- passed cannot raise an error in the evaluator (a wrong type, a cycle-free but unbounded depth, a
-- regex PCRE cannot compile). A tree that fails is refused as a whole: APISIX then drops the route
-- (HTTP) or the listener (L4), and nothing runs without its policy. Bounds above the agent's own
-- (rbac.ts's RBAC_LIMITS: depth 32, 20 000 rules, 4 KiB literals).
local re_find = ngx.re.find
local type, ipairs, pairs, pcall, tostring, floor = type, ipairs, pairs, pcall, tostring, math.floor

local MAX_DEPTH = 40
local MAX_NODES = 40000
local MAX_LITERAL = 8192
local MAX_FILTERS = 64

local _M = {}

local STRING_KINDS = { exact = true, prefix = true, suffix = true, contains = true, re = true }
local PSEUDO = { method = true, path = true, authority = true, scheme = true }
local ADDRESS_OF = { destination = true, direct = true, remote = true }

local function is_int(v, lo, hi)
    return type(v) == "number" and v == floor(v) and v >= lo and v <= hi
end

-- nil when ok, else the error
local function unless(ok, err)
    if ok then return nil end
    return err
end

local function opt_bool(v)
    return v == nil or type(v) == "boolean"
end

local function string_match(m)
    if type(m) ~= "table" or not STRING_KINDS[m.k] or type(m.v) ~= "string" or #m.v > MAX_LITERAL or not opt_bool(m.ic) then
        return "bad string matcher"
    end
    if m.k == "re" then
        local ok, _, _, err = pcall(re_find, "", m.v, "jo")
        if not ok or err then return "regex does not compile" end
    end
    return nil
end

local function budget(state, depth)
    state.nodes = state.nodes + 1
    if state.nodes > MAX_NODES then return "too many rules" end
    if depth > MAX_DEPTH then return "rules nested too deep" end
    return nil
end

local value_match
function value_match(m, state, depth)
    local err = budget(state, depth)
    if err then return err end
    if type(m) ~= "table" then return "bad value matcher" end
    local k = m.k
    if k == "str" then return string_match(m.m) end
    if k == "or" then
        if type(m.n) ~= "table" then return "bad value matcher list" end
        for _, x in ipairs(m.n) do
            err = value_match(x, state, depth + 1)
            if err then return err end
        end
        return nil
    end
    if k == "list" then return value_match(m.one, state, depth + 1) end
    if k == "present" or k == "bool" then return unless(type(m.v) == "boolean", "bad value matcher") end
    if k == "null" or k == "unknown" then return nil end
    if k == "num" then
        if m.eq ~= nil then return unless(type(m.eq) == "number", "bad number matcher") end
        return unless(type(m.lo) == "number" and type(m.hi) == "number", "bad number matcher")
    end
    return "unknown value matcher " .. tostring(k):sub(1, 20)
end

local node_check
function node_check(node, state, depth)
    local err = budget(state, depth)
    if err then return err end
    if type(node) ~= "table" then return "a rule that is not an object" end
    local t = node.t
    if t == "any" or t == "unknown" then return nil end
    if t == "and" or t == "or" then
        if type(node.n) ~= "table" then return "bad rule list" end
        for _, n in ipairs(node.n) do
            err = node_check(n, state, depth + 1)
            if err then return err end
        end
        return nil
    end
    if t == "not" then return node_check(node.n, state, depth + 1) end
    if t == "header" then
        local src = node.src
        if type(src) ~= "table" or not ((type(src.h) == "string" and #src.h <= 256) or PSEUDO[src.pseudo]) then
            return "bad header source"
        end
        if not opt_bool(node.inv) or not opt_bool(node.empty) or not opt_bool(node.present) then return "bad header flags" end
        if node.present == nil then return string_match(node.m) end
        return nil
    end
    if t == "path" or t == "sni" then return string_match(node.m) end
    if t == "peer" then
        if node.m == nil then return nil end
        return string_match(node.m)
    end
    if t == "dport" then
        -- Envoy's ports are uint32: a range beyond 65535 matches no connection, but is not malformed
        return unless(is_int(node.lo, 0, 4294967296) and is_int(node.hi, 0, 4294967296), "bad port range")
    end
    if t == "ip" then
        local n = node.v == 4 and 4 or (node.v == 6 and 16)
        if not n or not ADDRESS_OF[node.of] or type(node.b) ~= "table" or #node.b ~= n or not is_int(node.len, 0, n * 8) then
            return "bad address range"
        end
        for _, byte in ipairs(node.b) do
            if not is_int(byte, 0, 255) then return "bad address range" end
        end
        return nil
    end
    if t == "meta" then
        if type(node.path) ~= "table" or #node.path == 0 or not opt_bool(node.inv) then return "bad metadata matcher" end
        for _, k in ipairs(node.path) do
            if type(k) ~= "string" then return "bad metadata path" end
        end
        return value_match(node.m, state, depth + 1)
    end
    return "unknown rule " .. tostring(t):sub(1, 20)
end

-- nil when `filters` is a list of RBAC filters rbac.lua can walk, else what is wrong (short)
function _M.filters(filters)
    if type(filters) ~= "table" then return "RBAC filters are not a list" end
    local state = { nodes = 0 }
    local count = 0
    for k in pairs(filters) do
        count = count + 1
        if type(k) ~= "number" then return "RBAC filters are not a list" end
    end
    if count > MAX_FILTERS or count ~= #filters then return "RBAC filters are not a list of at most " .. MAX_FILTERS end
    for _, filter in ipairs(filters) do
        if type(filter) ~= "table" or (filter.name ~= nil and type(filter.name) ~= "string")
            or (filter.action ~= "ALLOW" and filter.action ~= "DENY" and filter.action ~= "LOG")
            or type(filter.policies) ~= "table" then
            return "bad RBAC filter"
        end
        for _, policy in ipairs(filter.policies) do
            if type(policy) ~= "table" then return "bad RBAC policy" end
            local err = node_check(policy.match, state, 1)
            if err then return err end
        end
    end
    return nil
end

return _M
