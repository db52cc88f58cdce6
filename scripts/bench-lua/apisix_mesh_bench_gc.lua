-- Measurement only (scripts/bench-dataplane.mjs, BENCH_VARIANTS=gc with BENCH_LUA_GC, or
-- BENCH_MEMORY_LUA_GC): the sidecar's hook, then LuaJIT's collector set to the pause and step
-- multiplier in the file `gc.conf` beside this module (over what the injection configured), in every
-- process of both subsystems.
require("apisix_mesh.hook")
local dir = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$")
local file = io.open(dir .. "/gc.conf", "r")
local pause, stepmul = file:read("*a"):match("^(%d+):(%d+)")
file:close()
collectgarbage("setpause", tonumber(pause))
collectgarbage("setstepmul", tonumber(stepmul))

-- the Lua heap's largest size seen by a 10 ms timer in each HTTP worker, in `peak-<worker id>`
-- (KiB, rewritten every second): what LuaJIT's allocator had to map at most
local apisix = require("apisix")
local http_init_worker = apisix.http_init_worker
apisix.http_init_worker = function(...)
    http_init_worker(...)
    if require("ngx.process").type() ~= "worker" then
        return
    end
    local peak, ticks = 0, 0
    ngx.timer.every(0.01, function()
        local now = collectgarbage("count")
        if now > peak then
            peak = now
        end
        ticks = ticks + 1
        if ticks % 100 == 0 then
            local file = io.open(dir .. "/peak-" .. ngx.worker.id(), "w")
            if file then
                file:write(string.format("%d", peak))
                file:close()
            end
        end
    end)
end
