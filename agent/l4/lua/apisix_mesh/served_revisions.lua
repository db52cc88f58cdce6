-- What APISIX's Prometheus export says of the configuration (`apisix_etcd_modify_indexes`), taken
-- from the workers, the processes that serve it. APISIX's exporter computes it, per directory and
-- as `max_modify_index`, from the newest modification revision among the objects of the process it
-- runs in: the privileged agent (its export server listens there only), which kept a copy of every
-- route and upstream for that alone (privileged_agent.lua drops that copy). Here each HTTP worker
-- records its own figure per directory in a shared dict after every change it applies, and the
-- export shows, per directory and overall, the lowest figure among the workers: the newest object
-- every worker holds. (The privileged agent's copy could be ahead of a worker or behind it; the test
-- harness's waitSynced reads `max_modify_index` to know APISIX caught up.)
local core = require("apisix.core")
local process = require("ngx.process")

local _M = {}

-- in the nginx configuration (webhook/injection/apisix-config.ts names it too)
_M.DICT = "apisix_mesh_served_revisions"

-- the directories APISIX 3.13's exporter reports (exporter.lua, etcd_modify_index); `max_modify_index`
-- is the newest of them
local DIRS = { "routes", "services", "ssls", "consumers", "global_rules", "upstreams", "stream_routes", "protos" }
local IS_DIR = {}
for _, d in ipairs(DIRS) do
    IS_DIR[d] = true
end

local publishing = false

-- the newest modification revision among a directory's objects, as the exporter computes it
-- (set_modify_index): deleted entries are `false` until APISIX compacts its list
local function newest(values)
    local max = 0
    for _, item in ipairs(values or {}) do
        if type(item) == "table" then
            local index = tonumber(item.orig_modifiedIndex or item.modifiedIndex) or 0
            if index > max then
                max = index
            end
        end
    end
    return max
end

local function key_of(worker, dir)
    return worker .. "/" .. dir
end

-- In init_by_lua, HTTP subsystem (hook.lua): after each read of a directory that changed what the
-- worker holds, the worker records the directory's figure. APISIX's only entry to that moment is
-- the sync function its tests inject (config_etcd.inject_sync_data, the original as test_sync_data);
-- true when it is in place, else nil and why (then nothing is recorded: privileged_agent.lua leaves
-- the privileged agent's copies, and with them APISIX's own figures, as they were).
function _M.install()
    local config_etcd = require("apisix.core.config_etcd")
    if core.config ~= config_etcd then
        return nil, "APISIX's configuration is not read from etcd"
    end
    if not ngx.shared[_M.DICT] then
        return nil, "no shared dict " .. _M.DICT
    end
    local sync_data = config_etcd.test_sync_data
    if type(sync_data) ~= "function" or type(config_etcd.inject_sync_data) ~= "function" then
        return nil, "APISIX's config_etcd has no test_sync_data/inject_sync_data"
    end
    config_etcd.inject_sync_data(function(self)
        local values, version = self.values, self.conf_version
        local a, b = sync_data(self)
        -- a changed object bumps conf_version; a re-read of a directory found empty replaces values
        if publishing and (self.conf_version ~= version or self.values ~= values) then
            local dir = type(self.key) == "string" and self.key:match("([^/]+)$")
            if IS_DIR[dir] then
                -- a full list (a missing entry: not yet read) is what APISIX's figures cost as well
                local ok, err = ngx.shared[_M.DICT]:set(key_of(ngx.worker.id(), dir), newest(self.values))
                if not ok then
                    core.log.error("apisix-mesh: cannot record the revision served for ", dir, ": ", err)
                end
            end
        end
        return a, b
    end)
    return true
end

-- In each HTTP worker, before APISIX's http_init_worker creates its configuration objects: a worker
-- that starts again (nginx replaces one that died) holds nothing yet; its previous figures go.
function _M.init_worker()
    if process.type() ~= "worker" then
        return
    end
    local dict = ngx.shared[_M.DICT]
    if not dict then
        return
    end
    local id = ngx.worker.id()
    for _, dir in ipairs(DIRS) do
        dict:delete(key_of(id, dir))
    end
    publishing = true
end

-- The export's figure for a directory, or for all of them (`max_modify_index`): the lowest among
-- the workers (one that has not read a directory yet counts 0, as an empty one).
local function served(dir)
    local dict = ngx.shared[_M.DICT]
    local lowest
    for id = 0, ngx.worker.count() - 1 do
        local figure = 0
        if dir then
            figure = dict:get(key_of(id, dir)) or 0
        else
            for _, d in ipairs(DIRS) do
                local v = dict:get(key_of(id, d)) or 0
                if v > figure then
                    figure = v
                end
            end
        end
        if not lowest or figure < lowest then
            lowest = figure
        end
    end
    return lowest or 0
end
_M.served = served

-- In the privileged agent, once APISIX's Prometheus exporter is initialized: its
-- `etcd_modify_indexes` gauge takes the workers' figures for the directories and
-- `max_modify_index` (its other labels, `x_etcd_index` and `prev_index`, are left as they are).
-- True, or nil and why the gauge is not where APISIX 3.13 has it.
function _M.take_over_export()
    local ok, exporter = pcall(require, "apisix.plugins.prometheus.exporter")
    if not ok or type(exporter) ~= "table" or type(exporter.get_prometheus) ~= "function" then
        return nil, "no apisix.plugins.prometheus.exporter.get_prometheus"
    end
    local prometheus = exporter.get_prometheus()
    local gauge = prometheus and type(prometheus.registry) == "table" and prometheus.registry.etcd_modify_indexes
    if type(gauge) ~= "table" or type(gauge.set) ~= "function" then
        return nil, "APISIX's exporter has no etcd_modify_indexes gauge (yet)"
    end
    local set = gauge.set
    gauge.set = function(self, value, label_values)
        local label = type(label_values) == "table" and label_values[1]
        if label == "max_modify_index" then
            value = served(nil)
        elseif IS_DIR[label] then
            value = served(label)
        end
        return set(self, value, label_values)
    end
    return true
end

_M.newest = newest

return _M
