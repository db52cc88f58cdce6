-- The listeners the agent publishes for the L4 front (etcd prefix /mesh_l4, one item per
-- Envoy listener, written by agent/l4/), watched by APISIX's own etcd client in the stream
-- workers and indexed for the front: per direction, by bound address and port, by port, and
-- the capture listener itself.
local core = require("apisix.core")
local mesh_watch = require("apisix_mesh.mesh_watch")
local chains = require("apisix_mesh.chains")
local handoff = require("apisix_mesh.handoff")
local l4_upstreams = require("apisix_mesh.l4_upstreams")
local rbac_check = require("apisix_mesh.rbac_check")
local find = string.find

local match_schema = {
    type = "object",
    properties = {
        port = { type = "integer", minimum = 1, maximum = 65535 },
        prefixes = {
            type = "array", maxItems = 256,
            items = {
                type = "object",
                properties = {
                    address = { type = "string", maxLength = 64 },
                    length = { type = "integer", minimum = 0, maximum = 128 },
                },
                required = { "address", "length" },
            },
        },
        server_names = { type = "array", maxItems = 4096, items = { type = "string", maxLength = 253 } },
        transport = { type = "string", enum = { "tls", "raw_buffer" } },
        alpn = { type = "array", maxItems = 16, items = { type = "string", maxLength = 64 } },
    },
}

local action_schema = {
    type = "object",
    properties = {
        kind = { type = "string", enum = { "http", "cluster", "passthrough", "refuse" } },
        clusters = {
            type = "array", maxItems = 256,
            items = {
                type = "object",
                properties = {
                    upstream_id = { type = "string", maxLength = 64 },
                    weight = { type = "integer", minimum = 0 },
                },
                required = { "upstream_id", "weight" },
            },
        },
        connect_timeout = { type = "number", exclusiveMinimum = 0 },
        -- the chain terminates Istio's mTLS: http, APISIX's TLS listener does; cluster and
        -- passthrough, the front's stream TLS listener does (tcp_mtls.lua)
        tls = { type = "boolean" },
        -- with tls: the peer's URI SANs must match one of these (the chain's match_subject_alt_names)
        peer_sans = {
            type = "array", maxItems = 16,
            items = {
                type = "object",
                properties = {
                    k = { type = "string", enum = { "exact", "prefix" } },
                    v = { type = "string", minLength = 1, maxLength = 512, pattern = "^[!-{}~]+$" },
                },
                required = { "k", "v" },
            },
        },
        reason = { type = "string", maxLength = 1024 },
        -- passthrough to an inbound cluster: its service, for Istio's TCP metrics (l4_metrics.lua)
        service = {
            type = "object",
            properties = {
                host = { type = "string", maxLength = 1024 },
                name = { type = "string", maxLength = 1024 },
                namespace = { type = "string", maxLength = 1024 },
            },
        },
    },
    required = { "kind" },
}

local chain_schema = {
    type = "object",
    properties = {
        name = { type = "string", maxLength = 512 },
        match = match_schema,
        action = action_schema,
        -- Envoy's network RBAC filters (agent/policy/rbac.ts trees), checked by rbac_check
        rbac = { type = "array", maxItems = 64, items = { type = "object" } },
    },
    required = { "action" },
}

local item_schema = {
    type = "object",
    properties = {
        id = { type = "string", maxLength = 64 },
        name = { type = "string", maxLength = 512 },
        direction = { type = "string", enum = { "outbound", "inbound" } },
        bind = {
            type = "object",
            properties = {
                address = { type = "string", maxLength = 64 },
                port = { type = "integer", minimum = 1, maximum = 65535 },
                virtual = { type = "boolean" },
                -- a port on the wildcard address of these families (0.0.0.0, ::): Envoy looks a
                -- wildcard listener up by the destination's family (listener-chains.ts, L4Bind)
                families = {
                    type = "array", maxItems = 2,
                    items = { type = "string", enum = { "ipv4", "ipv6" } },
                },
                -- the listener's other addresses (Envoy's additional_addresses: dual-stack services)
                also = {
                    type = "array", maxItems = 16,
                    items = {
                        type = "object",
                        properties = {
                            address = { type = "string", maxLength = 64 },
                            port = { type = "integer", minimum = 1, maximum = 65535 },
                        },
                        required = { "address", "port" },
                    },
                },
            },
        },
        chains = { type = "array", maxItems = 65536, items = chain_schema },
        default = chain_schema,
    },
    required = { "id", "direction", "bind", "chains" },
}

-- the chains' RBAC trees, whose shape JSON schema cannot say (recursive): a listener whose policy
-- is malformed is not loaded at all, so none of its connections is forwarded unjudged
local function check_listener(item)
    for _, chain in ipairs(item.chains or {}) do
        local err = chain.rbac and rbac_check.filters(chain.rbac)
        if err then return false, "chain " .. tostring(chain.name) .. ": " .. err end
    end
    local err = item.default and item.default.rbac and rbac_check.filters(item.default.rbac)
    if err then return false, "default chain: " .. err end
    return true
end

local _M = {}

local listeners
local index, index_version

-- True once this worker has read the listeners (an empty set counts: the directory exists).
function _M.loaded()
    return listeners ~= nil and listeners.values ~= nil
end

-- The readiness mark of this worker's stream side (hook.lua's status_ready checks every worker's):
-- the listeners and the endpoints of their clusters read.
local function mark_when_loaded(premature)
    if premature then
        return
    end
    local id = ngx.worker.id()
    if id == nil then
        return -- APISIX's privileged agent process serves no traffic
    end
    if _M.loaded() and l4_upstreams.loaded() then
        local ok, err = handoff.mark_ready(id)
        if not ok then
            core.log.error("apisix-mesh: cannot record the L4 front's readiness: ", err)
        end
        return
    end
    ngx.timer.at(0.05, mark_when_loaded)
end

function _M.init_worker()
    listeners = mesh_watch.watch("/mesh_l4", item_schema, check_listener)
    if not listeners then
        return
    end
    ngx.timer.at(0, mark_when_loaded)
end

local function build(values)
    local out = {
        outbound = { addr = {}, port = { ipv4 = {}, ipv6 = {} } },
        inbound = { addr = {}, port = { ipv4 = {}, ipv6 = {} } },
    }
    for _, entry in ipairs(values or {}) do
        local item = entry.value and core.table.deepcopy(entry.value)
        if item then
            chains.compile(item)
            local side = out[item.direction]
            local bind = item.bind
            if bind.virtual then
                side.virtual = item
            elseif bind.address and bind.port then
                side.addr[bind.address .. "#" .. bind.port] = item
                for _, a in ipairs(bind.also or {}) do
                    side.addr[a.address .. "#" .. a.port] = item
                end
            elseif bind.port then
                for _, family in ipairs(bind.families or {}) do
                    side.port[family][bind.port] = item
                end
            end
        end
    end
    return out
end

-- The listener Envoy would hand this connection to, or nil before the agent published any: the
-- one bound to the address, else the one on the wildcard address of the address's family (an
-- IPv6 address is written with colons: original_dst.lua's inet_ntop text), else the capture
-- listener itself.
function _M.listener(direction, ip, port)
    if not listeners or not listeners.values then
        return nil
    end
    if index_version ~= listeners.conf_version then
        index = build(listeners.values)
        index_version = listeners.conf_version
    end
    local side = index[direction]
    local family = find(ip, ":", 1, true) and "ipv6" or "ipv4"
    return side.addr[ip .. "#" .. port] or side.port[family][port] or side.virtual
end

return _M
