-- A per-worker map from a request's facts to what they were found to mean (istio_metrics.lua: the
-- keys of the series the request is counted in), so that facts seen before cost a few table reads
-- instead of Istio's 25 label values and their identity string being built and hashed again.
--
-- Keyed first by one table-valued fact (the peer's workload), weakly: those tables come and go with
-- APISIX's configuration (istiod's endpoint metadata) and peer_metadata.lua's cache, and their
-- entries go with them; then by each scalar fact of `fields`, in order (nil is a value of its own).
-- The caller must name every fact the meaning depends on. At most `max` entries: past it, the map
-- starts over.
local setmetatable = setmetatable

local _M = {}

local NONE = {}

local function weak()
    return setmetatable({}, { __mode = "k" })
end

function _M.new(table_field, fields, max)
    local root, size = weak(), 0
    local n = #fields
    local cache = {}

    function cache.get(facts)
        local node = root[facts[table_field] or NONE]
        for i = 1, n do
            if not node then
                return nil
            end
            local v = facts[fields[i]]
            node = node[v == nil and NONE or v]
        end
        return node
    end

    function cache.set(facts, value)
        if size >= max then
            root, size = weak(), 0
        end
        local key = facts[table_field] or NONE
        local node = root[key]
        if not node then
            node = {}
            root[key] = node
        end
        for i = 1, n - 1 do
            local v = facts[fields[i]]
            if v == nil then
                v = NONE
            end
            local child = node[v]
            if not child then
                child = {}
                node[v] = child
            end
            node = child
        end
        local v = facts[fields[n]]
        node[v == nil and NONE or v] = value
        size = size + 1
    end

    return cache
end

return _M
