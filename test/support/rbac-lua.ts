// Runs the sidecar's policy plugin (agent/l4/lua/apisix/plugins/apisix-mesh-policy.lua: JWT and
// RBAC, with its configuration from agent/policy/rbac-plugin.ts) under OpenResty's `resty` — the
// LuaJIT, ngx.re (PCRE), bit library, cjson, jsonschema and APISIX's lua-resty-openssl it runs
// with — the way APISIX runs it: the configuration arrives as JSON, passes the plugin's
// check_schema, and each request calls its rewrite phase with the same conf table. Only the request
// API, which `resty` has no request for, stands in: ngx.req.get_headers, the `apisix.core` calls the
// plugin makes (uri_safe_encode marks its input: ENC(...); request.set_header/add_header change the
// headers the next read sees).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findApisixRuntime } from './pod/apisix-runtime.js';
import { LUA_SOURCE_DIR } from '../../agent/l4/lua-modules.js';

export interface RbacRequest {
  /** nginx variables as APISIX's ctx.var gives them (uri, request_method, remote_addr, …) */
  var: Record<string, string>;
  /** request headers, lower-case names; an array for a repeated header */
  headers?: Record<string, string | string[]>;
}

export interface RbacOutcome {
  status?: number;
  body?: string;
  upstream_uri?: string;
  content_type?: string;
  www_authenticate?: string;
  /** the request headers after the function ran, when it changed them */
  headers?: Record<string, string | string[]>;
}

/** How many times the plugin compiled a configuration, up to and including each request. */
export interface RbacRun {
  outcomes: RbacOutcome[];
  compiles: number[];
}

const HARNESS = String.raw`
local cjson = require("cjson.safe")
local cases = cjson.decode(assert(io.open(arg[1])):read("*a"))
local current_headers, response_headers, changed = {}, {}, false
ngx.req.get_headers = function()
  local copy = {}
  for k, v in pairs(current_headers) do copy[k] = v end
  return copy
end
local errors = {}
local compiles = 0
local jsonschema = require("jsonschema")
package.loaded["apisix.core"] = {
  log = {
    warn = function() end,
    error = function(...) errors[#errors + 1] = table.concat({ ... }) end,
    info = function(...) if table.concat({ ... }):find("policy compiled", 1, true) then compiles = compiles + 1 end end,
  },
  schema = { check = function(schema, conf) return jsonschema.generate_validator(schema)(conf) end },
  table = { deepcopy = function(t)
    local function copy(v) if type(v) ~= "table" then return v end local o = {} for k, x in pairs(v) do o[k] = copy(x) end return o end
    return copy(t)
  end },
  response = { set_header = function(k, v) response_headers[k] = v end },
  utils = { uri_safe_encode = function(s) return "ENC(" .. s .. ")" end },
  request = {
    set_header = function(_, k, v) changed = true; current_headers[string.lower(k)] = v end,
    add_header = function(_, k, v)
      changed = true
      k = string.lower(k)
      local old = current_headers[k]
      if old == nil then current_headers[k] = v
      elseif type(old) == "table" then old[#old + 1] = v
      else current_headers[k] = { old, v } end
    end,
  },
}
local plugin = require("apisix.plugins.apisix-mesh-policy")
local confs = {}
for i, case in ipairs(cases) do
  local conf = confs[case.conf]
  if not conf then
    conf = cjson.decode(case.conf)
    local ok, err = plugin.check_schema(conf)
    if not ok then print(cjson.encode({ error = "check_schema: " .. tostring(err) })) os.exit(1) end
    confs[case.conf] = conf
  end
  current_headers, response_headers, changed = case.headers or {}, {}, false
  local var = case.var
  if var.upstream_uri == nil then var.upstream_uri = "" end
  local ctx = { var = var }
  local ok, code, body = pcall(plugin.rewrite, conf, ctx)
  if not ok then print(cjson.encode({ error = tostring(code) })) os.exit(1) end
  if #errors > 0 then print(cjson.encode({ error = "logged at error level: " .. errors[1] })) os.exit(1) end
  local out = { status = code, body = body, content_type = response_headers["Content-Type"], www_authenticate = response_headers["WWW-Authenticate"] }
  if var.upstream_uri ~= "" then out.upstream_uri = var.upstream_uri end
  if changed then out.headers = current_headers end
  out.compiles = compiles
  print(cjson.encode(out))
end
`;

/** `null` when `resty` of the APISIX runtime is there, else why not (for describeWhenAvailable). */
export function missingResty(): string | null {
  const runtime = findApisixRuntime();
  return typeof runtime === 'string' ? runtime : null;
}

/** Runs each (plugin configuration, request) pair; one resty process for all. */
export function runRbac(cases: Array<{ conf: Record<string, unknown> } & RbacRequest>): RbacOutcome[] {
  return runPolicyPlugin(cases).outcomes;
}

/** runRbac, with the plugin's compile count after each request. */
export function runPolicyPlugin(cases: Array<{ conf: Record<string, unknown> } & RbacRequest>): RbacRun {
  const runtime = findApisixRuntime();
  if (typeof runtime === 'string') throw new Error(runtime);
  const dir = mkdtempSync(join(tmpdir(), 'rbac-lua-'));
  try {
    writeFileSync(join(dir, 'harness.lua'), HARNESS);
    writeFileSync(join(dir, 'cases.json'), JSON.stringify(cases.map((c) => ({ ...c, conf: JSON.stringify(c.conf), headers: c.headers ?? {} }))));
    // APISIX's own Lua dependencies (lua-resty-openssl) are on its package path
    const deps = join(runtime.apisixHome, 'deps/share/lua/5.1');
    const res = spawnSync(join(runtime.openrestyBin, 'resty'), ['-I', LUA_SOURCE_DIR, '-I', deps, join(dir, 'harness.lua'), join(dir, 'cases.json')], { encoding: 'utf8', timeout: 60_000 });
    if (res.status !== 0 || res.stderr.trim()) throw new Error(`resty failed: ${res.stderr.slice(0, 2000)} ${res.stdout.slice(0, 2000)}`);
    const lines = res.stdout.trim().split('\n').map((l) => JSON.parse(l) as RbacOutcome & { error?: string; compiles: number });
    const failed = lines.find((l) => l.error);
    if (failed) throw new Error(failed.error);
    return { outcomes: lines.map(({ compiles: _, ...outcome }) => outcome), compiles: lines.map((l) => l.compiles) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
