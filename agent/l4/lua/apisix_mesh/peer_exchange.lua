-- The HTTP side of Istio's metadata exchange (the formats: peer_metadata.lua), in the sidecar's
-- request phases (hook.lua):
-- - inbound request: the client's pair is read into the source side of the metrics and removed
--   before the app sees it; the response then carries our own pair, each header only when the
--   request carried it (Envoy's downstream propagation), so that the client's sidecar learns us;
-- - outbound request to a mesh cluster (`outbound|…`, not the pass-through to unknown addresses,
--   nor a cluster marked external / disable_mx, which the agent does not translate as mesh
--   clusters anyway): our pair is set, replacing whatever the app sent; the response's pair is read
--   into the destination side and removed before the app sees it.
-- What it learns goes to ngx.ctx.apisix_mesh_peer_workload, which istio_metrics.lua reads.
local peer_metadata = require("apisix_mesh.peer_metadata")

local _M = {}

local ID, MD = peer_metadata.ID_HEADER, peer_metadata.HEADER

local our_id, our_value

-- Our pair, from the module the agent writes (agent/telemetry/local-workload.ts); without it the
-- sidecar sends nothing (the peer's metrics then say unknown, as for any app without a sidecar).
function _M.init_worker()
    local ok, conf = pcall(require, "apisix_mesh.istio_metrics_conf")
    if not ok or type(conf) ~= "table" or type(conf.local_workload) ~= "table" then
        return
    end
    our_id = type(conf.node_id) == "string" and conf.node_id ~= "" and conf.node_id or nil
    our_value = peer_metadata.encode(conf.local_workload)
end

local function first(v)
    if type(v) == "table" then
        return v[1]
    end
    return v
end

-- access phase, inbound, before the routes run
function _M.inbound_request()
    -- two variable reads: the usual request (no exchange) builds no header table
    local var = ngx.var
    local id, value = var.http_x_envoy_peer_metadata_id, var.http_x_envoy_peer_metadata
    if id == nil and value == nil then
        return
    end
    local ctx = ngx.ctx
    ctx.apisix_mesh_mx_asked = { id = id ~= nil, value = value ~= nil }
    ctx.apisix_mesh_peer_workload = peer_metadata.decode(value)
    ngx.req.clear_header(ID)
    ngx.req.clear_header(MD)
end

local function mesh_cluster(api_ctx)
    local key = api_ctx and api_ctx.upstream_key
    if type(key) == "string" and (key:sub(1, 12) == "passthrough#" or key:sub(1, 17) == "passthrough-grpc#") then
        return false
    end
    local up = api_ctx and api_ctx.matched_upstream
    local name = up and up.name
    return type(name) == "string" and name:sub(1, 9) == "outbound|"
end

-- access phase, outbound, once APISIX has picked the route's upstream
function _M.outbound_request(api_ctx)
    if not our_value or not mesh_cluster(api_ctx) then
        return
    end
    ngx.ctx.apisix_mesh_mx_sent = true
    if our_id then
        ngx.req.set_header(ID, our_id)
    end
    ngx.req.set_header(MD, our_value)
end

-- header filter: the response's side of the exchange
function _M.header_filter(direction)
    local ctx = ngx.ctx
    if direction == "outbound" then
        if not ctx.apisix_mesh_mx_sent then
            return
        end
        local value = ngx.header[MD]
        if value ~= nil then
            ctx.apisix_mesh_peer_workload = peer_metadata.decode(first(value))
        end
        ngx.header[MD] = nil
        ngx.header[ID] = nil
    elseif direction == "inbound" then
        local asked = ctx.apisix_mesh_mx_asked
        if not asked then
            return
        end
        if asked.id and our_id then
            ngx.header[ID] = our_id
        end
        if asked.value and our_value then
            ngx.header[MD] = our_value
        end
    end
end

return _M
