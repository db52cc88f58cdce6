-- The L4 front's metrics (l4.lua, stream subsystem), served with Istio's HTTP metrics on APISIX's
-- export server (istio_metrics.lua appends them):
-- - Istio's TCP metrics for the connections the front proxies itself (TCP chains: a cluster or the
--   pass-through; HTTP is counted by istio_metrics.lua): istio_tcp_connections_opened_total (when
--   the front has decided where the connection goes; behind Istio's mTLS, once the TLS listener has
--   verified the peer: tcp_mtls.lua), istio_tcp_connections_closed_total,
--   istio_tcp_received_bytes_total (from the client) and istio_tcp_sent_bytes_total (to the
--   client), both counted when the connection closes (Envoy also reports a long connection's bytes
--   every 15 s meanwhile; here they show at its end). Labels: istio_labels.lua's TCP set.
-- - apisix_mesh_network_rbac_denied_total: connections closed by network RBAC (l4_rbac.lua).
--
-- The stream and HTTP subsystems share no dictionary the sidecar can declare (see handoff.lua): the
-- counts live in `nacos`, with the hand-off records, under their own prefix. Bounded so that they
-- never crowd out a hand-off: at most MAX_SERIES label sets and LABEL_BUDGET bytes of label text
-- (plus one overflow series per reporter); safe_add never evicts, and a series that does not fit
-- goes to the overflow. Counting never fails a connection: an error loses a count, logged at most
-- once a minute.
local labels = require("apisix_mesh.istio_labels")
local metric_series = require("apisix_mesh.metric_series")
local tonumber = tonumber

local _M = {}

local DICT = "nacos"
local P = "apisix-mesh:l4m:"
local MAX_SERIES = 200
local LABEL_BUDGET = 1024 * 1024
local COUNTERS = {
    { key = "o", name = "istio_tcp_connections_opened_total", help = "TCP connections opened" },
    { key = "c", name = "istio_tcp_connections_closed_total", help = "TCP connections closed" },
    { key = "r", name = "istio_tcp_received_bytes_total", help = "Bytes received from the client of a TCP connection" },
    { key = "s", name = "istio_tcp_sent_bytes_total", help = "Bytes sent to the client of a TCP connection" },
}
local RBAC_DENIED = P .. "rbac_denied"

local local_side = labels.local_side(nil)
local complain = metric_series.complainer("apisix-mesh: L4 metrics: ")

local function dict()
    return ngx.shared[DICT]
end

-- series `id` (metric_series.register, the layout istio_metrics.lua uses, under this module's prefix)
local function register(d, id, text, key)
    local counters = {}
    for _, c in ipairs(COUNTERS) do
        counters[#counters + 1] = P .. c.key .. id
    end
    local registered, full = metric_series.register(d, id, counters, P .. "l:" .. id, text, key)
    if full then
        complain("no room for a new series (", full, "): its connections go to the overflow series")
    end
    return registered
end

-- stream workers, at start: the local side (the module the agent writes) and the overflow series
function _M.init_worker()
    local ok, conf = pcall(require, "apisix_mesh.istio_metrics_conf")
    if ok and type(conf) == "table" then
        local_side = labels.local_side(conf.local_workload)
    end
    local d = dict()
    if not d then
        return
    end
    d:safe_add(P .. "n", 0)
    d:safe_add(P .. "bytes", 0)
    for id, outbound in pairs({ os = true, od = false }) do
        for _, c in ipairs(COUNTERS) do
            d:safe_add(P .. c.key .. id, 0)
        end
        d:safe_add(P .. "l:" .. id, labels.label_text(labels.tcp_overflow(local_side, outbound), labels.TCP_NAMES))
    end
end

local function series(d, values)
    local text = labels.label_text(values, labels.TCP_NAMES)
    local overflow = values[1] == "source" and "os" or "od"
    local key = P .. "k:" .. ngx.md5(text)
    local id = d:get(key)
    if id then
        return id
    end
    if (d:get(P .. "n") or 0) >= MAX_SERIES or (d:get(P .. "bytes") or 0) + #text > LABEL_BUDGET then
        return overflow
    end
    local n = d:incr(P .. "n", 1, 0)
    if not n or n > MAX_SERIES then
        return overflow
    end
    d:incr(P .. "bytes", #text, 0)
    return register(d, n, text, key) or overflow
end

--[[ A TCP connection the front has decided to proxy:
  outbound   the direction
  service, service_name, service_namespace   the destination service (nil: unknown)
  peer       outbound: the destination's workload from istiod's endpoint metadata (endpoint_workload.lua), or nil
  mtls, peer_principal, local_principal   inbound behind Istio's mTLS (tcp_mtls.lua): the verified peer and our SPIFFE id
Counts it opened; returns the series for closed(), or nil. ]]
function _M.opened(c)
    local d = dict()
    if not d then
        return nil
    end
    local values = labels.tcp_values({
        outbound = c.outbound, local_side = local_side,
        service = c.service, service_name = c.service_name, service_namespace = c.service_namespace,
        peer = c.peer, mtls = c.mtls == true, peer_principal = c.peer_principal, local_principal = c.local_principal, protocol = "tcp", code = "0", grpc_status = "", flags = "-",
    })
    local id = series(d, values)
    local _, err = d:incr(P .. "o" .. id, 1)
    if err then
        complain("a count was lost: ", err)
    end
    return id
end

-- The connection's end: closed, with its bytes each way.
function _M.closed(id, received, sent)
    local d = dict()
    if not d or not id then
        return
    end
    local _, err = d:incr(P .. "c" .. id, 1)
    if not err then
        _, err = d:incr(P .. "r" .. id, tonumber(received) or 0)
    end
    if not err then
        _, err = d:incr(P .. "s" .. id, tonumber(sent) or 0)
    end
    if err then
        complain("a count was lost: ", err)
    end
end

-- log phase of a stream server that opened a series (the TLS listener of tcp_mtls.lua)
function _M.log()
    local id = ngx.ctx.apisix_mesh_tcp_series
    if id then
        local var = ngx.var
        _M.closed(id, var.bytes_received, var.bytes_sent)
    end
end

function _M.rbac_denied()
    local d = dict()
    if d then
        d:incr(RBAC_DENIED, 1, 0)
    end
end

local number = metric_series.number

-- HTTP side: the exposition lines, into out (a table of strings)
function _M.exposition(out)
    local d = dict()
    if not d then
        return out
    end
    local function add(s)
        out[#out + 1] = s
    end
    local n = d:get(P .. "n") or 0
    if n > MAX_SERIES then
        n = MAX_SERIES
    end
    local ids = {}
    for i = 1, n do
        ids[#ids + 1] = i
    end
    ids[#ids + 1] = "os"
    ids[#ids + 1] = "od"
    for _, c in ipairs(COUNTERS) do
        add("# HELP " .. c.name .. " " .. c.help .. " (Istio's standard metric, from APISIX)\n")
        add("# TYPE " .. c.name .. " counter\n")
        for _, id in ipairs(ids) do
            local text = d:get(P .. "l:" .. id)
            -- the overflow series show only once they count something
            if text and (type(id) == "number" or (d:get(P .. "o" .. id) or 0) > 0) then
                add(c.name .. "{" .. text .. "} " .. number(d:get(P .. c.key .. id) or 0) .. "\n")
            end
        end
    end
    add("# HELP apisix_mesh_network_rbac_denied_total Connections closed by network RBAC (an AuthorizationPolicy on a TCP port)\n")
    add("# TYPE apisix_mesh_network_rbac_denied_total counter\n")
    add("apisix_mesh_network_rbac_denied_total " .. number(d:get(RBAC_DENIED) or 0) .. "\n")
    return out
end

_M.MAX_SERIES = MAX_SERIES
return _M
