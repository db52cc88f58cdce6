-- The agent's own directories under /apisix/ (/mesh_l4, /mesh_tls, /mesh_identity, …) are read with
-- APISIX's own etcd client, as APISIX reads /routes: each item checked against the module's schema
-- (an item that fails is logged by APISIX and left out). One place opens such a watch and says,
-- once per worker, when it cannot.
local core = require("apisix.core")

local _M = {}

-- `checker`: optional, core.config's per-item check after the schema (e.g. cross-field rules).
function _M.watch(dir, item_schema, checker)
    local config, err = core.config.new(dir, { automatic = true, item_schema = item_schema, checker = checker })
    if not config then
        core.log.error("apisix-mesh: cannot watch ", dir, ": ", err)
    end
    return config
end

return _M
