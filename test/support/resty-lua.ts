// Runs a Lua script under the APISIX runtime's OpenResty `resty` (the LuaJIT and ngx.re PCRE APISIX
// runs the agent's Lua with), with a JSON input file as arg[1]; the script prints one JSON line per
// result. For the functions the translation writes (rewrite, CORS, mirror, retry), whose APISIX calls
// each test stands in for.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findApisixRuntime } from './pod/apisix-runtime.js';
import { LUA_SOURCE_DIR } from '../../agent/l4/lua-modules.js';

export { missingResty } from './rbac-lua.js';

/**
 * Each printed line, JSON-decoded; a failed run (or an `error` line) throws. With `modules`, the
 * agent's Lua modules (agent/l4/lua) and APISIX's own dependencies (jsonschema, lua-resty-http, …)
 * are on the package path, as in the sidecar; with `apisix`, APISIX's own modules and its C libraries
 * (resty.radixtree's) too. `shdicts`: shared dictionaries, `"<name> <size>"`.
 */
export function runResty<T>(script: string, input: unknown, options: { modules?: boolean; apisix?: boolean; shdicts?: string[] } = {}): T[] {
  const runtime = findApisixRuntime();
  if (typeof runtime === 'string') throw new Error(runtime);
  const dir = mkdtempSync(join(tmpdir(), 'resty-lua-'));
  try {
    writeFileSync(join(dir, 'script.lua'), script);
    writeFileSync(join(dir, 'input.json'), JSON.stringify(input));
    const path = options.modules ? ['-I', LUA_SOURCE_DIR, '-I', join(runtime.apisixHome, 'deps/share/lua/5.1')] : [];
    if (options.apisix) path.push('-I', runtime.apisixHome, '-I', join(runtime.apisixHome, 'deps/lib/lua/5.1'));
    const dicts = (options.shdicts ?? []).flatMap((d) => ['--shdict', d]);
    const res = spawnSync(join(runtime.openrestyBin, 'resty'), [...path, ...dicts, join(dir, 'script.lua'), join(dir, 'input.json')], { encoding: 'utf8', timeout: 60_000 });
    if (res.status !== 0 || res.stderr.trim()) throw new Error(`resty failed: ${res.stderr.slice(0, 2000)} ${res.stdout.slice(0, 2000)}`);
    const lines = res.stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as T & { error?: string });
    const failed = lines.find((l) => l.error);
    if (failed) throw new Error(failed.error);
    return lines;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Lua that loads a chunk as APISIX loads serverless functions and `_meta.pre_function`s. */
export const LOAD_FUNCTION_LUA = String.raw`
local cjson = require("cjson.safe")
local function load_function(src)
  local chunk, err = loadstring(src)
  if not chunk then print(cjson.encode({ error = "loadstring: " .. err })) os.exit(1) end
  local ok, fn = pcall(chunk)
  if not ok or type(fn) ~= "function" then print(cjson.encode({ error = "not a function: " .. tostring(fn) })) os.exit(1) end
  return fn
end
`;
