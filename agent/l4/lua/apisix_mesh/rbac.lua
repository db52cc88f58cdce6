-- Envoy's RBAC, evaluated (agent/policy/rbac.ts compiles istiod's filters into the trees this walks).
-- One evaluator for both subsystems: the HTTP policy plugin (apisix/plugins/apisix-mesh-policy.lua)
-- and the L4 front's network RBAC (l4_rbac.lua). It holds no policy of its own and reads no request
-- itself: each caller passes `facts`, the functions that read what a node asks about (the path,
-- a header, the destination, an address, JWT metadata, the server name), each given the caller's
-- per-request table `f`. A fact a subsystem cannot know is nil: unknown.
-- Evaluation is three-valued (T, F, U = unknown) with Kleene's rules, so a definite answer is the
-- one Envoy gives whatever the unknown values are; an unknown ALLOW policy does not allow, an
-- unknown DENY policy denies (fail closed). The trees are checked before use (rbac_check.lua).
local core = require("apisix.core")
local cjson_mod = require("cjson.safe")
local array_mt, json_null = cjson_mod.array_mt, cjson_mod.null
local re_find = ngx.re.find
local sub, find, lower, match = string.sub, string.find, string.lower, string.match
local band, rshift = bit.band, bit.rshift
local ipairs, type, tonumber, getmetatable = ipairs, type, tonumber, getmetatable

local T, F, U = 1, 0, 2

local _M = {}

local function parse_v4(s)
    local a, b, c, d = match(s, "^(%d%d?%d?)%.(%d%d?%d?)%.(%d%d?%d?)%.(%d%d?%d?)$")
    if not a then return nil end
    a, b, c, d = tonumber(a), tonumber(b), tonumber(c), tonumber(d)
    if a > 255 or b > 255 or c > 255 or d > 255 then return nil end
    return { a, b, c, d }
end

local function groups(part, out)
    if part == "" then return true end
    for g in (part .. ":"):gmatch("([^:]*):") do
        if #g == 0 or #g > 4 then return false end
        out[#out + 1] = tonumber(g, 16)
    end
    return true
end

local function parse_v6(s)
    if find(s, "[^%x:]") then return nil end
    local head, tail = s, ""
    local gap = find(s, "::", 1, true)
    if gap then
        head, tail = sub(s, 1, gap - 1), sub(s, gap + 2)
        if find(tail, "::", 1, true) then return nil end
    end
    local h, t = {}, {}
    if not groups(head, h) or not groups(tail, t) then return nil end
    local fill = 8 - #h - #t
    if (gap and fill < 1) or (not gap and fill ~= 0) then return nil end
    local bytes = {}
    local function push(g) bytes[#bytes + 1] = rshift(g, 8); bytes[#bytes + 1] = band(g, 255) end
    for _, g in ipairs(h) do push(g) end
    for _ = 1, fill do push(0) end
    for _, g in ipairs(t) do push(g) end
    return bytes
end

-- an address's bytes (4 or 16), nil for anything else
function _M.parse_ip(s)
    if type(s) ~= "string" then return nil end
    if find(s, ":", 1, true) then return parse_v6(s) end
    return parse_v4(s)
end

local function string_match(m, s)
    if m.ic then s = lower(s) end
    local k, v = m.k, m.v
    if k == "exact" then return s == v and T or F end
    if k == "prefix" then return sub(s, 1, #v) == v and T or F end
    if k == "suffix" then return (#v == 0 or sub(s, -#v) == v) and T or F end
    if k == "contains" then return find(s, v, 1, true) and T or F end
    local from, _, err = re_find(s, v, "jo")
    if err then
        -- a regex PCRE gives up on (APISIX's match limit) is unknown, never "no match"
        core.log.warn("apisix-mesh: RBAC regex not evaluated: ", err)
        return U
    end
    return from and T or F
end

-- Envoy's HeaderUtility::matchHeaders
local function header_match(node, f, facts)
    local v, cannot = facts.header(f, node.src)
    if cannot then return U end
    if v == nil and not node.empty then
        if node.inv then return (node.present == true) and T or F end
        return (node.present == false) and T or F
    end
    local m
    if node.present ~= nil then m = node.present and T or F else m = string_match(node.m, v or "") end
    if m == U or not node.inv then return m end
    return m == T and F or T
end

local function in_cidr(bytes, node)
    if #bytes ~= (node.v == 4 and 4 or 16) then return F end
    local len, net = node.len, node.b
    for i = 1, #net do
        local keep = len - (i - 1) * 8
        if keep <= 0 then break end
        local mask = keep >= 8 and 255 or 256 - 2 ^ (8 - keep)
        if band(bytes[i], mask) ~= net[i] then return F end
    end
    return T
end

-- Envoy's ValueMatcher: a matcher matches only a value of its kind
local value_match
function value_match(m, v)
    local k = m.k
    if k == "str" then
        if type(v) ~= "string" then return F end
        return string_match(m.m, v)
    end
    if k == "or" or k == "list" then
        local items = m.n
        if k == "list" then
            if type(v) ~= "table" or getmetatable(v) ~= array_mt then return F end
            items = v
        end
        local r = F
        for _, x in ipairs(items) do
            local got
            if k == "or" then got = value_match(x, v) else got = value_match(m.one, x) end
            if got == T then return T end
            if got == U then r = U end
        end
        return r
    end
    if k == "present" then return (m.v and v ~= nil) and T or F end
    if k == "bool" then return (type(v) == "boolean" and v == m.v) and T or F end
    if k == "null" then return v == json_null and T or F end
    if k == "num" then
        if type(v) ~= "number" then return F end
        if m.eq ~= nil then return v == m.eq and T or F end
        return (v >= m.lo and v < m.hi) and T or F
    end
    return U
end

local eval
function eval(node, f, facts)
    local t = node.t
    if t == "any" then return T end
    if t == "and" then
        local r = T
        for _, n in ipairs(node.n) do
            local v = eval(n, f, facts)
            if v == F then return F end
            if v == U then r = U end
        end
        return r
    end
    if t == "or" then
        local r = F
        for _, n in ipairs(node.n) do
            local v = eval(n, f, facts)
            if v == T then return T end
            if v == U then r = U end
        end
        return r
    end
    if t == "not" then
        local v = eval(node.n, f, facts)
        if v == U then return U end
        return v == T and F or T
    end
    if t == "header" then return header_match(node, f, facts) end
    if t == "path" then
        local p = facts.path(f)
        if not p then return U end
        return string_match(node.m, p)
    end
    if t == "dport" then
        local _, port = facts.destination(f)
        if not port then return U end
        return (port >= node.lo and port < node.hi) and T or F
    end
    if t == "ip" then
        local bytes = facts.address(f, node.of)
        if not bytes then return U end
        return in_cidr(bytes, node)
    end
    if t == "sni" then
        local name = facts.server_name(f)
        if not name then return U end
        return string_match(node.m, name)
    end
    if t == "peer" then
        -- the verified mTLS peer's URI SAN; "" for a connection without mTLS: no principal matches
        local p = facts.peer_principal(f)
        if p == nil then return U end
        if p == "" then return F end
        if not node.m then return T end
        return string_match(node.m, p)
    end
    if t == "meta" then
        local r = value_match(node.m, facts.metadata(f, node.path))
        if r == U or not node.inv then return r end
        return r == T and F or T
    end
    return U
end

-- Envoy's LOG action (Istio's AUDIT policies) never denies: a policy that matches marks the request
-- for the access log. Here that mark is a warning in APISIX's error log, which an operator greps
-- for "RBAC audit" (nginx adds the client and, for HTTP, the request line). Only a policy that
-- matched for sure is logged; an evaluation error is logged and the request goes on.
local function audit(filter, f, facts)
    for _, policy in ipairs(filter.policies) do
        if eval(policy.match, f, facts) == T then
            core.log.warn("apisix-mesh: RBAC audit: policy ", sub(policy.name or "(unnamed)", 1, 200),
                " of filter ", sub(filter.name or "(unnamed)", 1, 200), " matched")
            return
        end
    end
end

-- one filter: true when it lets the request (connection) on
local function passes(filter, f, facts)
    if filter.action == "LOG" then
        local ok, err = pcall(audit, filter, f, facts)
        if not ok then core.log.warn("apisix-mesh: RBAC audit filter raised an error: ", sub(tostring(err), 1, 200)) end
        return true
    end
    local unknown = false
    for _, policy in ipairs(filter.policies) do
        local v = eval(policy.match, f, facts)
        if v == T then return filter.action == "ALLOW" end
        if v == U then unknown = true end
    end
    -- ALLOW: nothing matched for sure; DENY: denied when a policy may have matched
    if filter.action == "ALLOW" then return false end
    return not unknown
end

-- The filters in order: nil when every one lets it on, else the name of the first that denies.
function _M.denied_by(filters, f, facts)
    for _, filter in ipairs(filters) do
        if not passes(filter, f, facts) then
            return filter.name or "(unnamed)"
        end
    end
    return nil
end

return _M
