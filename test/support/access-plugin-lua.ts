// Runs the sidecar's access-phase plugin (agent/l4/lua/apisix/plugins/apisix-mesh-access.lua, its
// configuration from agent/translate/access-phase.ts) under OpenResty's `resty` — the LuaJIT,
// cjson and jsonschema APISIX runs it with — the way APISIX does: the configuration arrives as JSON
// and passes the plugin's check_schema, then one request runs its access phase. What `resty` has no
// request for stands in: ngx.var, the request body and headers, ngx.exec, ngx.timer.at (the mirror's
// copies are recorded, not sent), and the APISIX calls the plugin makes (apisix.upstream.set,
// core.response.exit, core.config's upstreams, resty.ctxdump).
import { runResty } from './resty-lua.js';

export interface AccessRequest {
  conf: unknown;
  /** ctx.var / ngx.var */
  var?: Record<string, string>;
  headers?: Record<string, string>;
  method?: string;
  body?: string;
  /** the stored upstreams the mirror reads, by id */
  upstreams?: Record<string, { nodes: Array<{ host: string; port: number; weight?: number; priority?: number }> }>;
}

export interface AccessOutcome {
  /** check_schema's error, when the configuration is refused (nothing ran) */
  refused?: string;
  /** what ran, in order: passthrough, exit <code>, mirror <url>, exec <location> */
  steps: string[];
  /** apisix.upstream.set's arguments */
  set?: { key: string; version: number; conf: Record<string, unknown>; parent_is_route: boolean };
  /** the mirror copies: URL, method, headers, body, timeout */
  mirrors?: Array<{ url: string; method: string; headers: Record<string, string>; body?: string; timeout: number }>;
  /** ctx.apisix_mesh_retry and $ctx_ref at the hand-over */
  retry?: { flags: Record<string, boolean>; ctx_ref: string };
  logs: string[];
}

const HARNESS = String.raw`
local cjson = require("cjson.safe")
local cases = cjson.decode(assert(io.open(arg[1])):read("*a"))
local jsonschema = require("jsonschema")
local out
local store = {}
local function log(level) return function(...) out.logs[#out.logs + 1] = level .. ": " .. table.concat({ ... }) end end
package.loaded["apisix.core"] = {
  log = { warn = log("warn"), info = log("info"), error = log("error") },
  schema = { check = function(schema, conf) return jsonschema.generate_validator(schema)(conf) end },
  response = { exit = function(code) out.steps[#out.steps + 1] = "exit " .. code; return code end },
  config = { fetch_created_obj = function(key)
    assert(key == "/upstreams")
    return { get = function(_, id) local u = store[id] return u and { value = u } end }
  end },
}
package.loaded["apisix.upstream"] = {
  set = function(ctx, key, version, conf)
    out.steps[#out.steps + 1] = "passthrough"
    local parent = conf.parent
    conf.parent = nil
    out.set = { key = key, version = version, conf = conf, parent_is_route = parent == ctx.matched_route }
  end,
}
package.loaded["resty.ctxdump"] = { stash_ngx_ctx = function() return "stashed-ctx" end }
local plugin = require("apisix.plugins.apisix-mesh-access")
for _, case in ipairs(cases) do
  out = { steps = {}, logs = {} }
  store = case.upstreams or {}
  local conf = case.conf
  local ok, err = plugin.check_schema(conf)
  if not ok then
    out.refused = tostring(err)
  else
    local var = case.var or {}
    ngx.var = var
    ngx.req.read_body = function() end
    ngx.req.get_body_data = function() return case.body end
    ngx.req.get_body_file = function() return nil end
    ngx.req.get_headers = function() return case.headers or {} end
    ngx.req.get_method = function() return case.method or "GET" end
    ngx.timer.at = function(delay, fn, url, params, timeout)
      out.steps[#out.steps + 1] = "mirror " .. url
      out.mirrors = out.mirrors or {}
      out.mirrors[#out.mirrors + 1] = { url = url, method = params.method, headers = params.headers, body = params.body, timeout = timeout }
      return true
    end
    ngx.exec = function(location)
      out.steps[#out.steps + 1] = "exec " .. location
      return nil
    end
    local ctx = { var = var, conf_version = 7, matched_route = { value = { id = "r1" } } }
    plugin.access(conf, ctx)
    if ctx.apisix_mesh_retry then out.retry = { flags = ctx.apisix_mesh_retry, ctx_ref = var.ctx_ref } end
  end
  print(cjson.encode(out))
end
`;

/** Each request through the plugin; one resty process for all. */
export function runAccessPlugin(cases: AccessRequest[]): AccessOutcome[] {
  return runResty<AccessOutcome>(HARNESS, cases, { modules: true }).map((o) => ({ ...o, steps: arrayOf(o.steps), logs: arrayOf(o.logs) }));
}

/** the plugin's `schema`, as cjson encodes it */
export function accessPluginSchema(): unknown {
  const script = String.raw`
local cjson = require("cjson.safe")
package.loaded["apisix.core"] = { log = {}, schema = {}, response = {}, config = {} }
package.loaded["apisix.upstream"] = {}
package.loaded["resty.ctxdump"] = {}
print(cjson.encode(require("apisix.plugins.apisix-mesh-access").schema))
`;
  return runResty<unknown>(script, null, { modules: true })[0];
}

// cjson encodes an empty Lua table as {}
function arrayOf<T>(value: T[] | Record<string, never>): T[] {
  return Array.isArray(value) ? value : [];
}
