-- LuaJIT's collector in the sidecar's APISIX, as the injection configures it (`apisixLuaGc`,
-- written into config.yaml as `apisix_mesh.lua_gc`). LuaJIT's allocator keeps the pages of its
-- largest heap: a worker's memory follows the peak its collector allowed, not what is live. With
-- LuaJIT's defaults (pause 200 %, step multiplier 200 %) a worker at 1,000 services with ~19 MiB of
-- live Lua objects peaked at ~54 MiB under traffic: the next cycle starts only once the heap has
-- doubled, and garbage piles up while a cycle runs. A pause of 150 starts it at 1.5x, a step of 400
-- ends it sooner: a peak of ~27 MiB, and APISIX's memory after traffic -27 % on average, for a CPU
-- cost per request inside the benchmark's noise (BENCHMARKS.md, "LuaJIT's collector in the sidecar").
--
-- Set in init_by_lua (hook.lua), once per subsystem, before APISIX forks its processes: every
-- worker, the privileged agent and the stream workers inherit the collector's state, and each
-- reports what it runs with at the info level when it starts.
local core = require("apisix.core")

local _M = {}

-- the bounds the webhook's configuration reader enforces too (webhook/config/parse-config.ts)
local LIMITS = {
    pause = { 100, 1000 },
    stepmul = { 100, 10000 },
}

local function setting(conf, name)
    local value = conf[name]
    local limits = LIMITS[name]
    if value == nil then
        return nil
    end
    if type(value) ~= "number" or value % 1 ~= 0 or value < limits[1] or value > limits[2] then
        return nil, name .. " must be an integer in " .. limits[1] .. "-" .. limits[2] .. ", got "
                    .. tostring(value):sub(1, 40)
    end
    return value
end

-- Returns the pause and step multiplier in force afterwards (read back from the collector).
function _M.apply()
    local local_conf = core.config.local_conf()
    local conf = local_conf and local_conf.apisix_mesh and local_conf.apisix_mesh.lua_gc
    if type(conf) ~= "table" then
        conf = {}
    end
    local pause, pause_err = setting(conf, "pause")
    local stepmul, stepmul_err = setting(conf, "stepmul")
    local err = pause_err or stepmul_err
    if err then
        -- LuaJIT's defaults stay: a collector set half-way is worse than either setting
        core.log.error("apisix-mesh: apisix_mesh.lua_gc in config.yaml: ", err,
                       "; LuaJIT's collector keeps its defaults (agent/l4/lua/apisix_mesh/lua_gc.lua)")
        pause, stepmul = nil, nil
    end
    if pause then
        collectgarbage("setpause", pause)
    end
    if stepmul then
        collectgarbage("setstepmul", stepmul)
    end
    return _M.in_force()
end

-- The pause and step multiplier of this process's collector: setting a value returns the one
-- before, so each is set and set back.
function _M.in_force()
    local pause = collectgarbage("setpause", 200)
    collectgarbage("setpause", pause)
    local stepmul = collectgarbage("setstepmul", 200)
    collectgarbage("setstepmul", stepmul)
    return pause, stepmul
end

-- In each process's init_worker (hook.lua): what it inherited, at the info level.
function _M.report()
    local pause, stepmul = _M.in_force()
    core.log.info("apisix-mesh: LuaJIT's collector in this ", ngx.config.subsystem, " process: pause ",
                  pause, " %, step multiplier ", stepmul, " %")
end

return _M
