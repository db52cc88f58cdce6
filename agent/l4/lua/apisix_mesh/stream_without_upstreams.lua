-- APISIX's stream_init_worker loads every upstream (apisix.upstream.init_worker: a configuration
-- watch on /upstreams) for its stream routes. The sidecar has none (the agent writes no
-- /stream_routes; APISIX's own stream server is an unused loopback port) and the L4 front reads
-- the few clusters its TCP chains name from /mesh_tcp_upstreams (l4_upstreams.lua): loading
-- /upstreams there made every worker hold every upstream twice, once per subsystem (nginx's HTTP
-- and stream subsystems have separate Lua VMs). APISIX 3.13 has no switch for this, so the stream
-- subsystem's apisix.upstream.init_worker is replaced by one that loads nothing, and `check` says
-- in the error log, after stream_init_worker, whether that still holds for this APISIX.
local core = require("apisix.core")
local apisix_upstream = require("apisix.upstream")

local _M = {}

local skipped = false
local installed = false

-- In init_by_lua, stream subsystem only (hook.lua).
function _M.install()
    if type(apisix_upstream.init_worker) ~= "function" then
        ngx.log(ngx.ERR, "apisix-mesh: apisix.upstream has no init_worker: APISIX changed, the stream",
                " workers' load of /upstreams is not replaced (agent/l4/lua/apisix_mesh/stream_without_upstreams.lua)")
        return
    end
    apisix_upstream.init_worker = function()
        skipped = true
    end
    installed = true
end

-- After APISIX's stream_init_worker: an [error] line when the stream worker loaded /upstreams after
-- all, or when APISIX no longer calls what was replaced; else one line saying it holds none.
function _M.check()
    if not installed then
        return
    end
    if core.config.fetch_created_obj("/upstreams") then
        core.log.error("apisix-mesh: APISIX's stream subsystem loaded /upstreams although the sidecar replaced",
                       " apisix.upstream.init_worker there: APISIX changed (stream_without_upstreams.lua)")
    elseif not skipped then
        core.log.error("apisix-mesh: APISIX's stream_init_worker no longer calls apisix.upstream.init_worker:",
                       " APISIX changed, check what its stream subsystem loads (stream_without_upstreams.lua)")
    else
        core.log.warn("apisix-mesh: stream worker ", ngx.worker.id() or "privileged agent",
                      " holds none of APISIX's upstreams (the L4 front reads /mesh_tcp_upstreams)")
    end
end

return _M
