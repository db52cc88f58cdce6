#!/usr/bin/env node
// `BENCH_BASELINE_ROOT=<built checkout from before the policy plugin> APISIX_RUNTIME=… node scripts/bench-policy-recompile.mjs`
// What a request on one of more than 8 busy routes under policy paid before the policy became a
// plugin: APISIX's serverless plugin keeps compiled functions for 8 routes, so on a miss it
// recompiles the route's policy function (loadstring + run the chunk) — per request. Measured on the
// baseline's own generated Lua, under the APISIX runtime's resty (CPU time). The plugin compiles a
// route's policy once per route version instead (test/dataplane/policy-plugin.test.ts).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const root = process.env.BENCH_BASELINE_ROOT;
const runtime = process.env.APISIX_RUNTIME;
if (!root || !runtime) {
  console.log('skipped: set BENCH_BASELINE_ROOT (a built checkout whose policy was a serverless function) and APISIX_RUNTIME');
  process.exit(0);
}
const { fromCanonical } = await import(join(root, 'dist/agent/xds/codec.js'));
const { compileRbacFilter } = await import(join(root, 'dist/agent/policy/rbac.js'));
const { rbacLua } = await import(join(root, 'dist/agent/policy/rbac-plugin.js'));
const T = 'type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC';
const compile = (rules) => rbacLua([compileRbacFilter('envoy.filters.http.rbac', fromCanonical(T, { '@type': T, rules }))]);
const policies = {};
for (let p = 0; p < 10; p++) policies[`p${p}`] = { permissions: Array.from({ length: 10 }, (_, r) => ({ url_path: { path: { prefix: `/api/${p}/${r}` } } })), principals: [{ any: true }] };
const cases = [
  ['1 DENY rule (path prefix)', compile({ action: 'DENY', policies: { d: { permissions: [{ url_path: { path: { prefix: '/admin' } } }], principals: [{ any: true }] } } })],
  ['10 ALLOW policies x 10 rules', compile({ action: 'ALLOW', policies })],
];
const dir = mkdtempSync(join(tmpdir(), 'bench-recompile-'));
try {
  writeFileSync(join(dir, 'cases.json'), JSON.stringify(cases));
  writeFileSync(join(dir, 'bench.lua'), String.raw`
package.loaded["apisix.core"] = { log = {}, response = {}, utils = {}, request = {} }
local cjson = require("cjson.safe")
local cases = cjson.decode(assert(io.open(arg[1])):read("*a"))
local n = 20000
for _, c in ipairs(cases) do
  local src = c[2]
  for _ = 1, 1000 do loadstring(src)() end
  local t0 = os.clock()
  for _ = 1, n do loadstring(src)() end
  print(string.format("  %-32s %6d bytes of Lua: loadstring + chunk %7.1f us per request", c[1], #src, (os.clock() - t0) * 1e6 / n))
end
`);
  const res = spawnSync(join(runtime, 'prefix/openresty/bin/resty'), [join(dir, 'bench.lua'), join(dir, 'cases.json')], { encoding: 'utf8' });
  if (res.status !== 0) throw new Error(res.stderr.slice(0, 2000));
  console.log('the serverless function recompiled on a cache miss (baseline tree):');
  process.stdout.write(res.stdout);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
