-- The end of a route's access phase, once every other plugin has had its say (traffic-split picked
-- the upstream, limit-conn counted the request) and before APISIX connects upstream, as an APISIX
-- plugin the sidecar's APISIX loads from the agent's Lua directory (`extra_lua_path`, listed in
-- config.yaml's `plugins`). Each route carries what it needs as data (agent/translate/access-phase.ts),
-- run in this order:
--   original_destination: the request's upstream is where the app dialled (apisix_mesh.http_passthrough)
--   mirror: a copy of the request to the mirror clusters (apisix_mesh.http_mirror)
--   retry: the hand-over to the retry location that fits (agent/translate/retries.ts)
-- This replaced Lua code strings in APISIX's serverless-pre-function, whose cache of compiled
-- functions holds 8 routes: with more busy routes, every request compiled its route's Lua again.
-- Nothing here is compiled per route; the schema is the agent's too
-- (agent/schema/apisix/plugins/apisix-mesh-access.schema.json, a test keeps them equal).
local core = require("apisix.core")
local hash_key = require("apisix_mesh.hash_key")
local passthrough = require("apisix_mesh.http_passthrough")
local mirror = require("apisix_mesh.http_mirror")
local ctxdump = require("resty.ctxdump")

local plugin_name = "apisix-mesh-access"

local positive = { type = "number", exclusiveMinimum = 0 }
local port = { type = "integer", minimum = 1, maximum = 65535 }
local flag = { type = "boolean" }

local schema = {
    type = "object",
    properties = {
        original_destination = {
            type = "object",
            properties = {
                capture_ports = { type = "array", items = port, minItems = 2, maxItems = 2 },
                connect_timeout = positive,
                io_timeout = positive,
                scheme = { type = "string", enum = { "grpc" } },
                service = {
                    type = "object",
                    properties = {
                        host = { type = "string", pattern = [[^\S{1,256}$]] },
                        name = { type = "string", pattern = [[^\S{1,256}$]] },
                        namespace = { type = "string", pattern = [[^\S{1,256}$]] },
                    },
                    required = { "host" },
                    additionalProperties = false,
                },
            },
            required = { "capture_ports", "connect_timeout", "io_timeout" },
            additionalProperties = false,
        },
        mirror = {
            type = "object",
            properties = {
                mirrors = {
                    type = "array",
                    minItems = 1,
                    maxItems = 64,
                    items = {
                        type = "object",
                        properties = {
                            upstream = { type = "string", minLength = 1, maxLength = 64, pattern = "^[a-zA-Z0-9-_.]+$" },
                            cluster = { type = "string", maxLength = 1024 },
                            suffix = flag,
                            numerator = { type = "integer", minimum = 1 },
                            denominator = { type = "integer", minimum = 1 },
                        },
                        required = { "upstream", "cluster", "suffix", "numerator", "denominator" },
                        additionalProperties = false,
                    },
                },
                timeout_ms = { type = "integer", minimum = 0 },
                max_body = { type = "integer", minimum = 0 },
            },
            required = { "mirrors", "timeout_ms", "max_body" },
            additionalProperties = false,
        },
        retry = {
            type = "object",
            properties = {
                location = {
                    type = "string",
                    enum = { "apisix_mesh_retry", "apisix_mesh_retry_503", "apisix_mesh_retry_gateway", "apisix_mesh_retry_5xx" },
                },
                connect = flag,
                reset = flag,
                timeout = flag,
            },
            required = { "location", "connect", "reset", "timeout" },
            additionalProperties = false,
        },
        -- a hash policy's cookie to make when the request has none (apisix_mesh/hash_key.lua)
        hash_cookie = {
            type = "object",
            properties = {
                name = { type = "string", minLength = 1, maxLength = 256 },
                path = { type = "string", maxLength = 1024 },
                ttl = { type = "integer", minimum = 0 },
                attributes = {
                    type = "array",
                    maxItems = 16,
                    items = { type = "array", minItems = 2, maxItems = 2, items = { type = "string", maxLength = 1024 } },
                },
            },
            required = { "name", "path", "ttl", "attributes" },
            additionalProperties = false,
        },
    },
    minProperties = 1,
    additionalProperties = false,
}

local _M = {
    version = 0.1,
    -- after every other access-phase plugin (limit-conn 1003, traffic-split 966)
    priority = -3000,
    name = plugin_name,
    schema = schema,
}

function _M.check_schema(conf)
    return core.schema.check(schema, conf)
end

-- the request to the retry location, with APISIX's request context stashed, as APISIX hands gRPC
-- requests to `@grpc_pass` (webhook/injection/retry-locations.ts restores it)
local function hand_over(retry, ctx)
    ctx.apisix_mesh_retry = { connect = retry.connect, reset = retry.reset, timeout = retry.timeout }
    ngx.var.ctx_ref = ctxdump.stash_ngx_ctx()
    return ngx.exec("@" .. retry.location)
end

function _M.access(conf, ctx)
    if conf.hash_cookie then
        hash_key.generate_cookie(ctx, conf.hash_cookie)
    end
    if conf.original_destination then
        local code, body = passthrough.forward(conf.original_destination, ctx)
        if code or body then return code, body end
    end
    if conf.mirror then
        mirror.send(conf.mirror, ctx)
    end
    if conf.retry then
        return hand_over(conf.retry, ctx)
    end
end

return _M
