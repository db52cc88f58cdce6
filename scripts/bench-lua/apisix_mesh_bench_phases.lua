-- Measurement only (scripts/bench-dataplane.mjs, BENCH_VARIANTS=phases): the sidecar's hook with
-- APISIX's per-request phases and the pieces inside them timed in the worker's own CPU time
-- (clock_gettime(CLOCK_THREAD_CPUTIME_ID): time the worker was scheduled, not wall time, so a
-- loaded machine's preemption does not count). Cumulative figures go to a JSON file per worker
-- every second, in the directory named by the module's own path; the bench sums them.
-- Nested pieces are counted inside their phase too (the phase total is inclusive).
require("apisix_mesh.hook")

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } apisix_mesh_bench_timespec;
int clock_gettime(int clk_id, apisix_mesh_bench_timespec *tp);
]]
local CLOCK_THREAD_CPUTIME_ID = 3
local ts = ffi.new("apisix_mesh_bench_timespec")
local C = ffi.C
local function now_ns()
    C.clock_gettime(CLOCK_THREAD_CPUTIME_ID, ts)
    return tonumber(ts.tv_sec) * 1e9 + tonumber(ts.tv_nsec)
end

local totals, counts = {}, {}
local function add(name, ns)
    totals[name] = (totals[name] or 0) + ns
    counts[name] = (counts[name] or 0) + 1
end

-- wrap tbl[key] (looked up per call by its callers) so that its time counts as `name`
local function timed(tbl, key, name)
    local f = tbl[key]
    if type(f) ~= "function" then
        return
    end
    tbl[key] = function(...)
        local t0 = now_ns()
        local a, b, c = f(...)
        add(name, now_ns() - t0)
        return a, b, c
    end
end

local apisix = require("apisix")
-- per direction too, for the pieces named here
local function direction()
    local h = ngx.ctx.apisix_mesh
    return h and h.direction or "?"
end
local function timed_by_direction(tbl, key, name)
    local f = tbl[key]
    tbl[key] = function(...)
        local t0 = now_ns()
        local a, b, c = f(...)
        local dt = now_ns() - t0
        add(name, dt)
        add(name .. " [" .. direction() .. "]", dt)
        return a, b, c
    end
end
local plugin = require("apisix.plugin")
local load_balancer = require("apisix.balancer")

timed(apisix, "http_access_phase", "access (total, with the hook)")
timed(apisix, "http_header_filter_phase", "header_filter (total)")
timed(apisix, "http_body_filter_phase", "body_filter (total)")
timed(apisix, "http_log_phase", "log (total)")
timed(apisix, "http_balancer_phase", "balancer (total)")
timed(apisix, "handle_upstream", "handle_upstream (access / retry location)")
timed(load_balancer, "pick_server", "pick_server (with hash key, outlier)")
timed(plugin, "run_global_rules", "run_global_rules")
timed(plugin, "filter", "plugin.filter")
timed(require("apisix_mesh.handoff"), "lookup_for_connection", "hook: hand-off lookup")
timed_by_direction(require("apisix_mesh.istio_metrics"), "log", "log: Istio metrics")
-- inside Istio's metrics: what the log phase's count is made of
local istio_labels = require("apisix_mesh.istio_labels")
timed(require("apisix_mesh.istio_metrics"), "count", "log: Istio metrics: count (labels, series, counts)")
timed(istio_labels, "values", "log: Istio metrics: count: the 25 label values")
timed(istio_labels, "identity", "log: Istio metrics: count: the label set's identity")
timed(istio_labels, "service_of_cluster", "log: Istio metrics: the cluster's service")
timed(require("apisix_mesh.endpoint_workload"), "of_picked", "log: Istio metrics: the endpoint's workload")
timed(require("resty.expr.v1"), "eval", "router: a route's vars (lua-resty-expr eval)")
timed(require("apisix.core").ctx, "set_vars_meta", "access: core.ctx.set_vars_meta")
timed(require("apisix_mesh.outlier"), "count", "outlier.count (header filter + log)")
timed(require("resty.ctxdump"), "stash_ngx_ctx", "retry: ctxdump stash")
timed(require("resty.ctxdump"), "apply_ngx_ctx", "retry: ctxdump apply")
local retry_balancer = require("apisix_mesh.retry_balancer")
timed(retry_balancer, "before", "retry balancer: before")
timed(retry_balancer, "after", "retry balancer: after")

-- plugin.run_plugin per phase name
local run_plugin = plugin.run_plugin
plugin.run_plugin = function(phase, plugins, api_ctx, ...)
    local t0 = now_ns()
    local a, b = run_plugin(phase, plugins, api_ctx, ...)
    add("run_plugin " .. tostring(phase), now_ns() - t0)
    return a, b
end

-- the clock's own cost: two reads back to back, once per access phase
local access = apisix.http_access_phase
apisix.http_access_phase = function(...)
    local t0 = now_ns()
    add("(the clock itself, per pair of reads)", now_ns() - t0)
    return access(...)
end

local dir = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$")
local http_init_worker = apisix.http_init_worker
apisix.http_init_worker = function(...)
    http_init_worker(...)
    local router = require("apisix.router")
    if router.router_http then
        timed_by_direction(router.router_http, "match", "router match")
    end
    ngx.timer.every(1, function()
        local path = dir .. "/phases-" .. ngx.worker.pid() .. ".json"
        local file = io.open(path, "w")
        if file then
            local out = {}
            for name, ns in pairs(totals) do
                out[#out + 1] = string.format("%q: [%d, %d]", name, ns, counts[name])
            end
            file:write("{" .. table.concat(out, ", ") .. "}")
            file:close()
        end
    end)
end
