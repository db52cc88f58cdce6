-- Measurement only (scripts/bench-dataplane.mjs, BENCH_LUA_HEAP=1, the memory series): the
-- sidecar's hook, and in each HTTP worker a timer that, whenever its file `heap-<worker id>` is
-- missing from the directory named by the module's own path (the bench removes the files to ask),
-- runs two full collections and writes the live Lua heap there (collectgarbage("count"), KiB). The
-- PSS the bench reads otherwise includes garbage LuaJIT has not collected yet, which depends on when
-- its incremental collector last ran: two builds that allocate differently can differ by more than
-- what they keep. On demand only: a full collection of a large heap takes the worker a while.
require("apisix_mesh.hook")

local apisix = require("apisix")
local dir = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$")
local http_init_worker = apisix.http_init_worker
apisix.http_init_worker = function(...)
    http_init_worker(...)
    if require("ngx.process").type() ~= "worker" then
        return
    end
    local path = dir .. "/heap-" .. ngx.worker.id()
    ngx.timer.every(1, function()
        local asked = io.open(path, "r")
        if asked then
            asked:close()
            return
        end
        collectgarbage("collect")
        collectgarbage("collect")
        local file = io.open(path .. ".tmp", "w")
        if file then
            file:write(string.format("%d", collectgarbage("count")))
            file:close()
            os.rename(path .. ".tmp", path)
        end
    end)
end
