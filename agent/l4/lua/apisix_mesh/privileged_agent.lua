-- APISIX's privileged agent (an nginx process APISIX starts beside the workers) serves the sidecar's
-- Prometheus export (Istio's metrics and APISIX's, on :15090) and the status API; it never serves a
-- request. Yet it runs APISIX's http_init_worker and stream_init_worker as a worker does: it watched
-- every directory under /apisix/ and kept its own copy of every route and upstream (and, in its
-- stream subsystem, of the L4 listeners, TCP upstreams and TLS relay entries) — about as much
-- memory as a worker's copy (43 MiB of PSS at 1,000 services, 279 MiB at 10,000: BENCHMARKS.md).
--
-- What it read them for, in APISIX 3.13 and in the sidecar's own Lua:
-- - the exporter's `apisix_etcd_modify_indexes` (the newest revision per directory): taken from the
--   workers instead (served_revisions.lua);
-- - the exporter's `apisix_upstream_status` (active health checks): the agent writes none;
-- - the /plugins and /plugin_metadata watches: the plugins the sidecar runs are those of its
--   config.yaml, and none of them reads metadata in this process;
-- - the status API reads the workers' reports (shared dicts), the control API is off, no plugin of
--   the sidecar registers a privileged timer, and Istio's metrics are read from a shared dict.
-- So in the privileged agent, every configuration object APISIX or the sidecar's Lua creates to be
-- kept up to date (core.config.new with `automatic`) is created without that: the object APISIX
-- makes, registered as usual, that never reads (it looks as a worker's does before its first read:
-- no values). With none reading, the process opens no watch at all.
-- If APISIX no longer looks as this expects, an [error] line says so once and nothing is changed.
local core = require("apisix.core")
local process = require("ngx.process")

local _M = {}

local PRIVILEGED = "privileged agent"

local state = {
    -- nil: not decided yet (the first call in the privileged agent decides); true / false
    holding_none = nil,
    -- directories whose object was created without a watch
    skipped = {},
}

local function complain(what, why)
    core.log.error("apisix-mesh: the privileged agent keeps APISIX's configuration after all: ", what,
                   tostring(why), " (agent/l4/lua/apisix_mesh/privileged_agent.lua)")
end

-- `figures`: in the HTTP subsystem, served_revisions.lua installed (true) or why not (nil, err);
-- in the stream subsystem nil: nothing there reads a figure in the privileged agent.
local function decide(subsystem_needs_figures, figures, figures_err)
    if not subsystem_needs_figures then
        return true
    end
    if not figures then
        complain("the workers do not record their revisions: ", figures_err)
        return false
    end
    -- the first configuration object (/plugins) is created after APISIX's exporter initialized
    local ok, err = require("apisix_mesh.served_revisions").take_over_export()
    if not ok then
        complain("", err)
        return false
    end
    return true
end

-- In init_by_lua (hook.lua), before APISIX's init_worker phases run in any process.
function _M.install(subsystem_needs_figures, figures, figures_err)
    local config = core.config
    if config.type ~= "etcd" or type(config.new) ~= "function" then
        ngx.log(ngx.ERR, "apisix-mesh: APISIX's configuration is not core.config_etcd with new(): the",
                " privileged agent keeps its copies (agent/l4/lua/apisix_mesh/privileged_agent.lua)")
        return
    end
    local new = config.new
    config.new = function(key, opts)
        if not (key and type(opts) == "table" and opts.automatic) or process.type() ~= PRIVILEGED then
            return new(key, opts)
        end
        if state.holding_none == nil then
            state.holding_none = decide(subsystem_needs_figures, figures, figures_err)
        end
        if not state.holding_none then
            return new(key, opts)
        end
        local unwatched = core.table.clone(opts)
        unwatched.automatic = false
        local obj, err = new(key, unwatched)
        if not obj then
            -- APISIX makes a non-automatic object with its etcd client: should that fail, as before
            core.log.error("apisix-mesh: the privileged agent reads ", key, " after all: ", err)
            return new(key, opts)
        end
        state.skipped[key] = true
        return obj
    end
end

-- After APISIX's init_worker in the privileged agent: an [error] line if a directory APISIX's
-- workers read is watched here after all (something created it past core.config.new), else one
-- line saying what the process holds.
function _M.check(subsystem)
    if process.type() ~= PRIVILEGED or not state.holding_none then
        return
    end
    for _, key in ipairs({ "/routes", "/upstreams" }) do
        local obj = core.config.fetch_created_obj(key)
        if obj and obj.automatic then
            core.log.error("apisix-mesh: APISIX's privileged agent watches ", key, " although the sidecar",
                           " creates it unwatched there: APISIX changed (privileged_agent.lua)")
            return
        end
    end
    local n = 0
    for _ in pairs(state.skipped) do
        n = n + 1
    end
    core.log.warn("apisix-mesh: the privileged agent's ", subsystem, " subsystem holds none of the",
                  " configuration (", n, " directories left unread)")
end

return _M
