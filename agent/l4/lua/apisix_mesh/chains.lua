-- Envoy's filter chain selection (FilterChainMatch), for the listeners the agent publishes under
-- /mesh_l4: the listener bound to the original destination's address and port, else the one on
-- its port, else the capture listener itself; then, level by level, destination port, destination
-- IP (longest prefix), server name (exact, then the longest wildcard), transport protocol,
-- application protocols. At each level the chains whose criterion matches most specifically are
-- kept, else those without the criterion; none left means no chain: the connection is closed.
local ipmatcher = require("resty.ipmatcher")

local _M = {}

local function compile_peer_sans(action)
    -- the hand-off record's form (handoff.lua): "e:<exact>" / "p:<prefix>", space-separated
    if action and action.peer_sans and #action.peer_sans > 0 then
        local out = {}
        for i, m in ipairs(action.peer_sans) do
            out[i] = (m.k == "exact" and "e:" or "p:") .. m.v
        end
        action.peer_sans_record = table.concat(out, " ")
    end
end

-- Prepares one listener item (as validated by l4_config) for matching.
-- `index`: the chain's position (0: the default chain), by which the stream TLS listener finds the
-- chain again once the handshake is done (tcp_mtls.lua)
function _M.compile(item)
    compile_peer_sans(item.default and item.default.action)
    if item.default then
        item.default.index = 0
    end
    for i, chain in ipairs(item.chains) do
        chain.index = i
        compile_peer_sans(chain.action)
        local m = chain.match or {}
        chain.match = m
        if m.prefixes then
            m.matchers = {}
            for i, p in ipairs(m.prefixes) do
                local matcher = ipmatcher.new({ p.address .. "/" .. p.length })
                if matcher then
                    m.matchers[i] = { matcher = matcher, length = p.length }
                end
            end
        end
    end
    return item
end

local function keep(chains, score)
    -- score(chain) -> nil (criterion set, no match), 0 (criterion unset), > 0 (match, higher = more specific)
    local best, out = 0, {}
    for _, c in ipairs(chains) do
        local s = score(c.match)
        if s and s > best then
            best, out = s, { c }
        elseif s and s == best and best > 0 then
            out[#out + 1] = c
        end
    end
    if best > 0 then
        return out
    end
    for _, c in ipairs(chains) do
        if score(c.match) == 0 then
            out[#out + 1] = c
        end
    end
    return out
end

local function port_score(port)
    return function(m)
        if not m.port then return 0 end
        return m.port == port and 1 or nil
    end
end

local function ip_score(ip)
    return function(m)
        if not m.matchers or #m.matchers == 0 then return 0 end
        local best
        for _, x in ipairs(m.matchers) do
            if x.matcher:match(ip) and (not best or x.length + 1 > best) then
                best = x.length + 1
            end
        end
        return best
    end
end

local function name_score(sni)
    return function(m)
        local names = m.server_names
        if not names or #names == 0 then return 0 end
        if not sni then return nil end
        local best
        for _, name in ipairs(names) do
            if name == sni then
                return 100000
            end
            if name:sub(1, 2) == "*." then
                local suffix = name:sub(2)
                if #sni > #suffix and sni:sub(-#suffix) == suffix and (not best or #suffix > best) then
                    best = #suffix
                end
            end
        end
        return best
    end
end

local function transport_score(transport)
    return function(m)
        if not m.transport then return 0 end
        return m.transport == transport and 1 or nil
    end
end

local function alpn_score(protocols)
    return function(m)
        local wanted = m.alpn
        if not wanted or #wanted == 0 then return 0 end
        for _, w in ipairs(wanted) do
            for _, p in ipairs(protocols or {}) do
                if w == p then return 1 end
            end
        end
        return nil
    end
end

-- The chains left after the destination levels, and whether the rest needs the client's bytes.
function _M.by_destination(item, ip, port)
    local chains = keep(item.chains, port_score(port))
    chains = keep(chains, ip_score(ip))
    local inspect = false
    for _, c in ipairs(chains) do
        local m = c.match
        if (m.server_names and #m.server_names > 0) or m.transport or (m.alpn and #m.alpn > 0) then
            inspect = true
            break
        end
    end
    return chains, inspect
end

-- The chain at `index` (chains.compile's), or nil.
function _M.at(item, index)
    if index == 0 then
        return item.default
    end
    return item.chains[index]
end

-- The one chain for what the connection speaks (detect.inspect's result), or nil.
function _M.by_protocol(chains, seen)
    chains = keep(chains, name_score(seen and seen.sni))
    chains = keep(chains, transport_score(seen and seen.transport or "raw_buffer"))
    chains = keep(chains, alpn_score(seen and seen.alpn))
    return chains[1]
end

return _M
