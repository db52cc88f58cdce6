-- The server's identity as Envoy checks it for upstream TLS: the chain it sent must verify up to
-- one of the trusted roots (the mesh roots for Istio's mutual TLS, the DestinationRule's CA for
-- SIMPLE; as a TLS server certificate, within its validity), and, when the cluster names subject
-- alt names, one of the leaf's SANs must match one of the matchers (Envoy's
-- `match_subject_alt_names`: URI, IP and email SANs as strings, DNS SANs with Envoy's wildcard rule
-- for exact matchers). Pure over resty.openssl objects: unit-tested without a connection.
local _M = {}

local lower = string.lower

local function matches(matcher, value)
    local want, got = matcher.value, value
    if matcher.ignore_case then
        want, got = lower(want), lower(got)
    end
    local kind = matcher.kind
    if kind == "exact" then
        return got == want
    elseif kind == "prefix" then
        return got:sub(1, #want) == want
    elseif kind == "suffix" then
        return #got >= #want and got:sub(-#want) == want
    elseif kind == "contains" then
        return got:find(want, 1, true) ~= nil
    end
    return false
end

-- Envoy's dnsNameMatch: a SAN "*.example.com" matches "a.example.com" (one label), exact matchers only.
local function dns_matches(matcher, san)
    if matches(matcher, san) then
        return true
    end
    if matcher.kind ~= "exact" or san:sub(1, 2) ~= "*." then
        return false
    end
    local want = matcher.ignore_case and lower(matcher.value) or matcher.value
    local suffix = matcher.ignore_case and lower(san:sub(2)) or san:sub(2)
    local dot = want:find(".", 1, true)
    return dot ~= nil and dot > 1 and want:sub(dot) == suffix
end

-- The leaf's SANs as {type = "URI"|"DNS"|..., value = ...} (at most 64 looked at).
function _M.alt_names(leaf)
    local names = {}
    local san = leaf:get_subject_alt_name()
    if not san then
        return names
    end
    for kind, value in pairs(san) do
        names[#names + 1] = { type = kind, value = value }
        if #names >= 64 then
            break
        end
    end
    return names
end

-- True when one SAN matches one matcher; an empty matcher list accepts any SAN.
function _M.san_matches(names, matchers)
    if not matchers or #matchers == 0 then
        return true
    end
    for _, name in ipairs(names) do
        for _, m in ipairs(matchers) do
            if (name.type == "URI" or name.type == "IP" or name.type == "email") and matches(m, name.value) then
                return true
            elseif name.type == "DNS" and dns_matches(m, name.value) then
                return true
            end
        end
    end
    return false
end

-- nil when the peer is who the cluster expects, else the reason. `store`: the trusted roots,
-- named `roots` in the reason (default: the mesh roots).
function _M.check(store, leaf, chain, matchers, roots)
    local ok, err = store:verify(leaf, chain, false, nil, "ssl_server")
    if not ok then
        return "its certificate chain does not verify against " .. (roots or "the mesh roots") .. ": " .. tostring(err)
    end
    local names = _M.alt_names(leaf)
    if not _M.san_matches(names, matchers) then
        local seen = {}
        for i = 1, math.min(#names, 3) do
            seen[i] = names[i].type .. ":" .. names[i].value:sub(1, 128)
        end
        return "its certificate's SANs (" .. table.concat(seen, ", ") .. ") match none of the cluster's"
    end
    return nil
end

return _M
