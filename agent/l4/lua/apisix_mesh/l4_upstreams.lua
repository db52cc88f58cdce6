-- The endpoints of the clusters the L4 front's TCP chains name (etcd prefix /mesh_tcp_upstreams, one
-- item per cluster, keyed by its upstream id; written by agent/l4/stream-upstreams.ts), watched by
-- APISIX's own etcd client in the stream workers. They stand in for APISIX's /upstreams, which the
-- stream workers do not load (stream_without_upstreams.lua): every worker held every upstream a
-- second time there, for the few clusters TCP proxies use.
local mesh_watch = require("apisix_mesh.mesh_watch")

local item_schema = {
    type = "object",
    properties = {
        id = { type = "string", maxLength = 64 },
        nodes = {
            type = "array", maxItems = 100000,
            items = {
                type = "object",
                properties = {
                    host = { type = "string", minLength = 1, maxLength = 256 },
                    port = { type = "integer", minimum = 1, maximum = 65535 },
                    weight = { type = "integer", minimum = 0 },
                    -- istiod's endpoint metadata, for Istio's TCP metrics (endpoint_workload.lua)
                    workload = { type = "string", maxLength = 1024 },
                },
                required = { "host", "port", "weight" },
            },
        },
        -- seconds, as APISIX's upstream timeout.connect
        connect = { type = "number", exclusiveMinimum = 0 },
        -- for Istio's TCP metrics (l4_metrics.lua): the cluster's name, and an inbound cluster's service
        name = { type = "string", maxLength = 1024 },
        service = {
            type = "object",
            properties = {
                host = { type = "string", maxLength = 1024 },
                name = { type = "string", maxLength = 1024 },
                namespace = { type = "string", maxLength = 1024 },
            },
        },
    },
    required = { "id", "nodes" },
}

local _M = {}

local upstreams

function _M.init_worker()
    upstreams = mesh_watch.watch("/mesh_tcp_upstreams", item_schema)
end

-- True once this worker has read the directory (an empty one counts).
function _M.loaded()
    return upstreams ~= nil and upstreams.values ~= nil
end

-- The cluster's nodes ({ host, port, weight }) and connect timeout, or nil while it has none here.
function _M.get(id)
    local item = upstreams and upstreams:get(id)
    local value = item and item.value
    if not value then
        return nil
    end
    return value.nodes, value.connect
end

-- The cluster's item ({ name, service, … }: Istio's TCP metrics read the first two), or nil.
function _M.meta(id)
    local item = upstreams and upstreams:get(id)
    return item and item.value or nil
end

return _M
