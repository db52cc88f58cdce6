-- Istio's standard HTTP metrics for the requests through the sidecar: istio_requests_total and
-- the histograms istio_request_duration_milliseconds, istio_request_bytes, istio_response_bytes
-- (Envoy's default buckets, which Istio keeps), counted in APISIX's log phase (hook.lua) into one
-- nginx shared dict that every worker shares, and served by APISIX's Prometheus export server on
-- PATH (the agent merges it into /stats/prometheus), with the TCP metrics of the L4 front
-- (l4_metrics.lua). Labels: istio_labels.lua; the peer's side: peer_exchange.lua.
--
-- Bounded: at most MAX_SERIES label sets (plus one overflow series per reporter that takes every
-- request of a label set beyond the bound), whatever clients, apps or peers send. A series costs
-- ~13 KiB of the dict with the usual label values (64 counters and its label text twice; values are
-- cut to 256 bytes); the dict is sized for the bound in apisix-config.ts (`custom_lua_shared_dict`)
-- and never evicts: a series that does not fit goes to the overflow. Counting never fails a
-- request: an error loses a count, logged at most once a minute.
--
-- A request's counts go first to a table of its worker, added to the dict every FLUSH_INTERVAL
-- seconds (and when the worker exits): seven shared-dict increments per request, each taking the
-- dict's lock and building its key, were about a fifth of the log phase (BENCHMARKS.md, "Istio's
-- metrics counted per worker"). A scrape therefore sees a request up to FLUSH_INTERVAL late, as
-- Envoy's own statistics are flushed on an interval.
--
-- Layout of the dict: `n` the series allocated; `k:<labels>` → series id; `l:<id>` → labels;
-- `c:<id>` requests; `<h><id>:<i>` the count of bucket i (not cumulative; i = #BUCKETS + 1 is
-- beyond the last bound) and `<h><id>:s` the sum, for h = d (duration), q (request bytes),
-- r (response bytes). Overflow ids: `os` (reporter source), `od` (destination).
local labels = require("apisix_mesh.istio_labels")
local facts_cache = require("apisix_mesh.facts_cache")
local endpoint_workload = require("apisix_mesh.endpoint_workload")
local metric_series = require("apisix_mesh.metric_series")
local concat, tostring, tonumber, ngx_now, floor = table.concat, tostring, tonumber, ngx.now, math.floor

local _M = {}

_M.DICT = "apisix-mesh-istio-metrics"
_M.PATH = "/stats/prometheus"
-- the dict is sized for this many (apisix-config.ts); the agent may ask for fewer
local MAX_SERIES_LIMIT = 1000
local MAX_SERIES = MAX_SERIES_LIMIT

-- Envoy's default histogram buckets (Istio sets none of its own): milliseconds and bytes alike
local BUCKETS = { 0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000 }
local BUCKET_TEXT = {}
for i, b in ipairs(BUCKETS) do
    BUCKET_TEXT[i] = b == floor(b) and string.format("%d", b) or tostring(b)
end
local NB = #BUCKETS

local HISTOGRAMS = {
    { key = "d", name = "istio_request_duration_milliseconds", help = "Duration of requests, in milliseconds" },
    { key = "q", name = "istio_request_bytes", help = "Sizes of requests (line, headers and body), in bytes" },
    { key = "r", name = "istio_response_bytes", help = "Sizes of responses (status line, headers and body), in bytes" },
}

_M.FLUSH_INTERVAL = 1

local dict
local local_side = labels.local_side(nil)
-- per worker: label set (istio_labels.identity) → series id, for the admitted series only (so at
-- most MAX_SERIES + 2)
local known = {}
-- per worker: series id → its counters' keys (series_keys), for the same series
local keys_of = {}
-- per worker: the dict's key → what to add to it at the next flush
local pending = {}
-- per worker: a request's facts → the keys of its series (admitted series only). The fields are all
-- that istio_labels.values reads but `local_side` (the same for every request of the worker) and
-- `peer` (the first level of the cache).
local FACT_FIELDS = { "outbound", "mtls", "code", "protocol", "flags", "grpc_status", "service",
                      "service_name", "service_namespace", "peer_principal", "local_principal" }
local by_facts = facts_cache.new("peer", FACT_FIELDS, 4 * MAX_SERIES_LIMIT)
local complain = metric_series.complainer("apisix-mesh: Istio metrics: ")

-- What the agent wrote at start (apisix_mesh/istio_metrics_conf.lua, agent/telemetry/local-workload.ts):
-- the local workload's labels and the series bound. Without it the local side is `unknown` too.
local function load_conf()
    local ok, conf = pcall(require, "apisix_mesh.istio_metrics_conf")
    if not ok or type(conf) ~= "table" then
        ngx.log(ngx.WARN, "apisix-mesh: no local workload labels for Istio's metrics: ", tostring(conf):sub(1, 200))
        return labels.local_side(nil), MAX_SERIES_LIMIT
    end
    local max = tonumber(conf.max_series)
    if not max or max < 1 or max > MAX_SERIES_LIMIT then
        max = MAX_SERIES_LIMIT
    end
    return labels.local_side(conf.local_workload), floor(max)
end

-- A series' counters' keys: `c` the requests; per histogram (d, q, r) its buckets' keys in order and
-- `<h>s` its sum's.
local function series_keys(id)
    local keys = { c = "c:" .. id }
    for _, h in ipairs(HISTOGRAMS) do
        local buckets = {}
        for i = 1, NB + 1 do
            buckets[i] = h.key .. id .. ":" .. i
        end
        keys[h.key] = buckets
        keys[h.key .. "s"] = h.key .. id .. ":s"
    end
    return keys
end

-- A series' counters, all created with it (never by a count): a full dict refuses a new series
-- instead of evicting another's counts (safe_add never evicts; incr on a key that exists never
-- allocates).
local function counter_keys(id)
    local k = series_keys(id)
    local keys = { k.c }
    for _, h in ipairs(HISTOGRAMS) do
        for _, key in ipairs(k[h.key]) do
            keys[#keys + 1] = key
        end
        keys[#keys + 1] = k[h.key .. "s"]
    end
    return keys
end

-- The labels as series `id` (metric_series.register), or nil when the dict is full.
local function register(id, text)
    local registered, full = metric_series.register(dict, id, counter_keys(id), "l:" .. id, text, "k:" .. text)
    if full then
        complain("no room for a new series (", full, "): its requests go to the overflow series")
    end
    return registered
end

-- Adds the worker's pending counts to the dict.
function _M.flush()
    if not dict or next(pending) == nil then
        return
    end
    local batch = pending
    pending = {}
    for key, n in pairs(batch) do
        local _, err = dict:incr(key, n)
        if err then
            complain("counts were lost: ", err)
        end
    end
end

function _M.init_worker()
    dict = ngx.shared[_M.DICT]
    if not dict then
        ngx.log(ngx.ERR, "apisix-mesh: no shared dict ", _M.DICT, ": Istio's metrics are not counted")
        return
    end
    -- also called once more when the worker exits (premature), so that its last counts stay
    local ok, err = ngx.timer.every(_M.FLUSH_INTERVAL, _M.flush)
    if not ok then
        ngx.log(ngx.ERR, "apisix-mesh: Istio's metrics: no flush timer (", err, "): requests are not counted")
        dict = nil
        return
    end
    local_side, MAX_SERIES = load_conf()
    dict:safe_add("n", 0)
    -- every worker registers them; the first one's stay (the same labels, the same ids)
    for id, outbound in pairs({ os = true, od = false }) do
        local keys = counter_keys(id)
        for _, k in ipairs(keys) do
            dict:safe_add(k, 0)
        end
        dict:safe_add("l:" .. id, labels.label_text(labels.overflow(local_side, outbound)))
    end
end

-- The series of a label set: known, registered now (within the bound), or the overflow's.
local function series(values)
    local identity = labels.identity(values)
    local id = known[identity]
    if id then
        return id
    end
    local text = labels.label_text(values)
    local overflow = values[1] == "source" and "os" or "od"
    id = dict:get("k:" .. text)
    if not id then
        if (dict:get("n") or 0) >= MAX_SERIES then
            return overflow
        end
        local n = dict:incr("n", 1)
        if not n or n > MAX_SERIES then
            return overflow
        end
        id = register(n, text)
        if not id then
            return overflow
        end
    end
    known[identity] = id
    return id
end

local function bucket(value)
    for i = 1, NB do
        if value <= BUCKETS[i] then
            return i
        end
    end
    return NB + 1
end

local function add(key, n)
    pending[key] = (pending[key] or 0) + n
end

-- One request's facts (see istio_labels.values) → counted (at the next flush).
function _M.count(facts, duration_ms, request_bytes, response_bytes)
    if not dict then
        return
    end
    local keys = by_facts.get(facts)
    if not keys then
        facts.local_side = local_side
        local id = series(labels.values(facts))
        keys = keys_of[id]
        if not keys then
            keys = series_keys(id)
            keys_of[id] = keys
        end
        -- not the overflow's: past the bound, facts are as many as clients make them
        if id ~= "os" and id ~= "od" then
            by_facts.set(facts, keys)
        end
    end
    add(keys.c, 1)
    add(keys.d[bucket(duration_ms)], 1)
    add(keys.ds, duration_ms)
    add(keys.q[bucket(request_bytes)], 1)
    add(keys.qs, request_bytes)
    add(keys.r[bucket(response_bytes)], 1)
    add(keys.rs, response_bytes)
end

-- The request's upstream: the one APISIX picked, else the route's (a request answered before the
-- upstream was chosen: a policy's 403, a fault's abort). Read without APISIX's lookup, which logs
-- an error for a missing id.
local function upstream_of(api_ctx)
    local up = api_ctx.matched_upstream
    if up then
        return up
    end
    local route = api_ctx.matched_route
    local id = api_ctx.upstream_id or (route and route.value and route.value.upstream_id)
    if not id then
        return nil
    end
    local upstreams = require("apisix.core").config.fetch_created_obj("/upstreams")
    local item = upstreams and upstreams:get(tostring(id))
    return item and item.value
end

-- The destination service: an outbound cluster names it; an inbound cluster carries the first
-- service of istiod's metadata for it (agent/translate/cluster-service.ts) in its upstream's labels,
-- or, forwarded to the address dialled as Envoy's inbound clusters are, in the pass-through's
-- configuration (http_passthrough.lua); the other pass-through routes (no stored upstream,
-- `passthrough#<address>`) have none.
local function destination(api_ctx, outbound)
    local service = api_ctx.apisix_mesh_service
    if not outbound and type(service) == "table" and service.host then
        return service.host, service.name, service.namespace
    end
    local key = api_ctx.upstream_key
    if type(key) == "string" and (key:sub(1, 12) == "passthrough#" or key:sub(1, 17) == "passthrough-grpc#") then
        return nil, outbound and "PassthroughCluster" or "InboundPassthroughCluster", nil
    end
    local up = upstream_of(api_ctx)
    if not up then
        return nil
    end
    local l = up.labels
    if not outbound and type(l) == "table" and l["istio-service"] then
        return l["istio-service"], l["istio-service-name"], l["istio-service-namespace"]
    end
    return labels.service_of_cluster(up.name)
end

-- The log phase of a request on the sidecar's HTTP listener (hook.lua): counted when it came
-- through the capture (the hand-off record says its direction).
function _M.log()
    -- ngx.ctx is looked up through the request on each read: once here
    local ctx = ngx.ctx
    local h = ctx.apisix_mesh
    local api_ctx = ctx.api_ctx
    if not dict or not h or not api_ctx then
        return
    end
    local var = ngx.var
    local outbound = h.direction == "outbound"
    local service, service_name, service_namespace = destination(api_ctx, outbound)
    local code, flags = labels.response_code(ngx.status)
    local mtls = not outbound and var.https == "on"
    local principal
    if mtls then
        local identity = require("apisix_mesh.identity").current()
        principal = identity and identity.spiffe_id
    end
    local protocol = labels.protocol(var.http_content_type)
    _M.count({
        outbound = outbound,
        service = service, service_name = service_name, service_namespace = service_namespace,
        -- the peer's sidecar said (peer_exchange.lua); else, outbound, istiod's endpoint metadata
        peer = ctx.apisix_mesh_peer_workload or (outbound and endpoint_workload.of_picked(api_ctx) or nil),
        peer_principal = ctx.apisix_mesh_peer_principal,
        local_principal = principal,
        mtls = mtls,
        protocol = protocol,
        code = code,
        grpc_status = protocol == "grpc" and labels.grpc_status(ngx.header["grpc-status"] or var.upstream_trailer_grpc_status) or "",
        flags = flags,
    }, (ngx_now() - ngx.req.start_time()) * 1000, tonumber(var.request_length) or 0, tonumber(var.bytes_sent) or 0)
end

local function each_series(fn)
    local n = dict:get("n") or 0
    if n > MAX_SERIES then
        n = MAX_SERIES
    end
    for i = 1, n do
        local text = dict:get("l:" .. i)
        if text then
            fn(i, text)
        end
    end
    for _, id in ipairs({ "os", "od" }) do
        local text = dict:get("l:" .. id)
        -- the overflow series show only once they count something
        if text and (dict:get("c:" .. id) or 0) > 0 then
            fn(id, text)
        end
    end
end

local number = metric_series.number

-- The exposition (Prometheus text format 0.0.4), as a table of strings.
function _M.exposition()
    local out = {}
    local function add(s)
        out[#out + 1] = s
    end
    if not dict then
        return out
    end
    add("# HELP istio_requests_total Requests through the sidecar (Istio's standard metric, from APISIX)\n")
    add("# TYPE istio_requests_total counter\n")
    each_series(function(id, text)
        add("istio_requests_total{" .. text .. "} " .. number(dict:get("c:" .. id) or 0) .. "\n")
    end)
    for _, h in ipairs(HISTOGRAMS) do
        add("# HELP " .. h.name .. " " .. h.help .. " (Istio's standard metric, from APISIX)\n")
        add("# TYPE " .. h.name .. " histogram\n")
        each_series(function(id, text)
            local total = 0
            for i = 1, NB + 1 do
                total = total + (dict:get(h.key .. id .. ":" .. i) or 0)
                local le = i <= NB and BUCKET_TEXT[i] or "+Inf"
                add(h.name .. "_bucket{" .. text .. ',le="' .. le .. '"} ' .. number(total) .. "\n")
            end
            add(h.name .. "_sum{" .. text .. "} " .. number(dict:get(h.key .. id .. ":s") or 0) .. "\n")
            add(h.name .. "_count{" .. text .. "} " .. number(total) .. "\n")
        end)
    end
    return out
end

-- APISIX's export server: the metrics on PATH (GET).
-- (with the L4 front's TCP metrics, l4_metrics.lua)
function _M.export()
    ngx.header["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8"
    ngx.print(concat(require("apisix_mesh.l4_metrics").exposition(_M.exposition())))
    return ngx.exit(200)
end

return _M
