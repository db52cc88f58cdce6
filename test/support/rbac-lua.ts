// Runs the agent's policy function (agent/policy/rbac-plugin.ts: JWT and RBAC) under OpenResty's
// `resty` — the LuaJIT, ngx.re (PCRE), bit library, cjson and APISIX's lua-resty-openssl it runs
// with — the way APISIX's serverless plugin loads it (loadstring, call, must return a function),
// against requests given as nginx variables. Only the request API, which `resty` has no request
// for, stands in: ngx.req.get_headers, the `apisix.core` calls the function makes (uri_safe_encode
// marks its input: ENC(...); request.set_header/add_header change the headers the next read sees).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findApisixRuntime } from './pod/apisix-runtime.js';

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
package.loaded["apisix.core"] = {
  log = { warn = function() end, error = function(...) errors[#errors + 1] = table.concat({ ... }) end },
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
local loaded = {}
for i, case in ipairs(cases) do
  local fn = loaded[case.lua]
  if not fn then
    local chunk, err = loadstring(case.lua)
    if not chunk then print(cjson.encode({ error = "loadstring: " .. err })) os.exit(1) end
    local ok, f = pcall(chunk)
    if not ok or type(f) ~= "function" then print(cjson.encode({ error = "not a function: " .. tostring(f) })) os.exit(1) end
    fn = f
    loaded[case.lua] = f
  end
  current_headers, response_headers, changed = case.headers or {}, {}, false
  local var = case.var
  if var.upstream_uri == nil then var.upstream_uri = "" end
  local ctx = { var = var }
  local ok, code, body = pcall(fn, {}, ctx)
  if not ok then print(cjson.encode({ error = tostring(code) })) os.exit(1) end
  if #errors > 0 then print(cjson.encode({ error = "logged at error level: " .. errors[1] })) os.exit(1) end
  local out = { status = code, body = body, content_type = response_headers["Content-Type"], www_authenticate = response_headers["WWW-Authenticate"] }
  if var.upstream_uri ~= "" then out.upstream_uri = var.upstream_uri end
  if changed then out.headers = current_headers end
  print(cjson.encode(out))
end
`;

/** `null` when `resty` of the APISIX runtime is there, else why not (for describeWhenAvailable). */
export function missingResty(): string | null {
  const runtime = findApisixRuntime();
  return typeof runtime === 'string' ? runtime : null;
}

/** Runs each (function, request) pair; one resty process for all. */
export function runRbac(cases: Array<{ lua: string } & RbacRequest>): RbacOutcome[] {
  const runtime = findApisixRuntime();
  if (typeof runtime === 'string') throw new Error(runtime);
  const dir = mkdtempSync(join(tmpdir(), 'rbac-lua-'));
  try {
    writeFileSync(join(dir, 'harness.lua'), HARNESS);
    writeFileSync(join(dir, 'cases.json'), JSON.stringify(cases.map((c) => ({ ...c, headers: c.headers ?? {} }))));
    // APISIX's own Lua dependencies (lua-resty-openssl) are on its package path
    const deps = join(runtime.apisixHome, 'deps/share/lua/5.1');
    const res = spawnSync(join(runtime.openrestyBin, 'resty'), ['-I', deps, join(dir, 'harness.lua'), join(dir, 'cases.json')], { encoding: 'utf8', timeout: 60_000 });
    if (res.status !== 0 || res.stderr.trim()) throw new Error(`resty failed: ${res.stderr.slice(0, 2000)} ${res.stdout.slice(0, 2000)}`);
    const lines = res.stdout.trim().split('\n').map((l) => JSON.parse(l) as RbacOutcome & { error?: string });
    const failed = lines.find((l) => l.error);
    if (failed) throw new Error(failed.error);
    return lines;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
