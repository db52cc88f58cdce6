-- The destination's workload from istiod's endpoint metadata (`istio.workload`, kept on each APISIX
-- node as metadata.istio_workload by agent/translate/endpoint-workload.ts):
-- `<workload>;<namespace>;<canonical service>;<canonical revision>;<cluster>`. Envoy's stats plugin
-- reads the destination's labels from it when the destination did not answer with Istio's metadata
-- exchange (peer_exchange.lua): a server without a sidecar, a TCP connection. App and version are
-- not in it (unknown, as with Envoy).
local find, sub = string.find, string.sub

local _M = {}

-- parsed strings, per worker; few distinct values (one per workload), bounded anyway
local parsed, count = {}, 0
local MAX_CACHED = 4096

-- "a;b;c;d;e" → { workload, namespace, canonical_service, canonical_revision, cluster }, or nil
-- when fewer than five fields (as Envoy's convertEndpointMetadata)
function _M.parse(value)
    if type(value) ~= "string" then
        return nil
    end
    local hit = parsed[value]
    if hit ~= nil then
        return hit or nil
    end
    local parts, from = {}, 1
    while #parts < 5 do
        local at = find(value, ";", from, true)
        parts[#parts + 1] = sub(value, from, (at or 0) - 1)
        if not at then
            break
        end
        from = at + 1
    end
    local out = false
    if #parts >= 5 then
        local function text(v) return v ~= "" and v or nil end
        out = {
            workload = text(parts[1]), namespace = text(parts[2]), canonical_service = text(parts[3]),
            canonical_revision = text(parts[4]), cluster = text(parts[5]),
        }
    end
    if count >= MAX_CACHED then
        parsed, count = {}, 0
    end
    parsed[value], count = out, count + 1
    return out or nil
end

-- per upstream nodes table (weak): "host:port" → the node's workload string
local index = setmetatable({}, { __mode = "k" })

local function unbracket(host)
    if type(host) == "string" and host:byte(1) == 91 then
        return sub(host, 2, -2)
    end
    return host
end

-- The workload of the node APISIX picked last for this request (its upstream's nodes, the address
-- it connected to), or nil.
function _M.of_picked(api_ctx)
    local up = api_ctx and api_ctx.matched_upstream
    local nodes = up and up.nodes
    local ip, port = api_ctx and api_ctx.balancer_ip, api_ctx and api_ctx.balancer_port
    if type(nodes) ~= "table" or not ip or not port then
        return nil
    end
    local by_address = index[nodes]
    if not by_address then
        by_address = {}
        for _, node in ipairs(nodes) do
            local meta = type(node) == "table" and node.metadata
            if type(meta) == "table" and type(meta.istio_workload) == "string" then
                by_address[unbracket(node.host) .. ":" .. tostring(node.port)] = meta.istio_workload
            end
        end
        index[nodes] = by_address
    end
    return _M.parse(by_address[unbracket(ip) .. ":" .. tostring(port)])
end

return _M
