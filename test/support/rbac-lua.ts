// Runs the agent's RBAC function (agent/policy/rbac-plugin.ts) under OpenResty's `resty` — the
// LuaJIT, ngx.re (PCRE) and bit library APISIX runs it with — the way APISIX's serverless plugin
// loads it (loadstring, call, must return a function), against requests given as nginx variables.
// Only the request API, which `resty` has no request for, stands in: ngx.req.get_headers, the
// `apisix.core` calls the function makes (uri_safe_encode marks its input: ENC(...)).
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
}

const HARNESS = String.raw`
local cjson = require("cjson.safe")
local cases = cjson.decode(assert(io.open(arg[1])):read("*a"))
local current_headers, response_headers = {}, {}
ngx.req.get_headers = function() return current_headers end
package.loaded["apisix.core"] = {
  log = { warn = function() end },
  response = { set_header = function(k, v) response_headers[k] = v end },
  utils = { uri_safe_encode = function(s) return "ENC(" .. s .. ")" end },
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
  current_headers, response_headers = case.headers or {}, {}
  local var = case.var
  if var.upstream_uri == nil then var.upstream_uri = "" end
  local ctx = { var = var }
  local ok, code, body = pcall(fn, {}, ctx)
  if not ok then print(cjson.encode({ error = tostring(code) })) os.exit(1) end
  local out = { status = code, body = body, content_type = response_headers["Content-Type"] }
  if var.upstream_uri ~= "" then out.upstream_uri = var.upstream_uri end
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
    const res = spawnSync(join(runtime.openrestyBin, 'resty'), [join(dir, 'harness.lua'), join(dir, 'cases.json')], { encoding: 'utf8', timeout: 60_000 });
    if (res.status !== 0 || res.stderr.trim()) throw new Error(`resty failed: ${res.stderr.slice(0, 2000)} ${res.stdout.slice(0, 2000)}`);
    const lines = res.stdout.trim().split('\n').map((l) => JSON.parse(l) as RbacOutcome & { error?: string });
    const failed = lines.find((l) => l.error);
    if (failed) throw new Error(failed.error);
    return lines;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
