#!/usr/bin/env node
// `npm run bench -- rbac`: what the RBAC function costs APISIX per request. The agent's own Lua
// (compiled from Istio-shaped RBAC filters) runs under the APISIX runtime's `resty` — the LuaJIT and
// PCRE APISIX runs it with — against one request, many times, next to a baseline function that does
// nothing (what a route without RBAC pays for a serverless function: nothing at all, in fact).
// Cases: one DENY rule; 10 ALLOW policies × 10 rules each (method AND path prefix AND a header), the
// request matching only the last rule of the last policy, so that every rule is evaluated; the same
// with regex path rules. Needs APISIX_RUNTIME (as the data-plane tests do).
// Plain ESM over dist/ (npm run bench builds first).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fromCanonical } from '../dist/agent/xds/codec.js';
import { compileRbacFilter } from '../dist/agent/policy/rbac.js';
import { rbacLua } from '../dist/agent/policy/rbac-plugin.js';

const RBAC_TYPE = 'type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC';
const ITERATIONS = Number(process.env.BENCH_ITERATIONS ?? 200_000);
const runtime = process.env.APISIX_RUNTIME;
if (!runtime) {
  console.log('skipped: set APISIX_RUNTIME (the APISIX runtime the data-plane tests use)');
  process.exit(0);
}

const compile = (rules) => compileRbacFilter('envoy.filters.http.rbac', fromCanonical(RBAC_TYPE, { '@type': RBAC_TYPE, rules }));
const or = (rule) => ({ or_rules: { rules: [rule] } });
const istioRule = (method, path, team) => ({
  and_rules: { rules: [or({ header: { name: ':method', exact_match: method } }), or({ url_path: { path } }), or({ header: { name: 'x-team', string_match: { exact: team } } })] },
});
function policies(n, rulesEach, pathOf) {
  const out = {};
  for (let p = 0; p < n; p++) {
    const permissions = [];
    for (let r = 0; r < rulesEach; r++) permissions.push(istioRule('GET', pathOf(p, r), `team-${p}-${r}`));
    out[`ns[bench]-policy[p${p}]-rule[0]`] = { permissions, principals: [{ any: true }] };
  }
  return out;
}

const cases = [
  ['no RBAC (baseline: an empty function)', 'return function(conf, ctx) end'],
  ['1 DENY rule (path prefix)', rbacLua([compile({ action: 'DENY', policies: { d: { permissions: [{ url_path: { path: { prefix: '/admin' } } }], principals: [{ any: true }] } } })])],
  ['10 ALLOW policies x 10 rules, prefix paths', rbacLua([compile({ action: 'ALLOW', policies: policies(10, 10, (p, r) => ({ prefix: `/api/${p}/${r}` })) })])],
  ['10 ALLOW policies x 10 rules, regex paths', rbacLua([compile({ action: 'ALLOW', policies: policies(10, 10, (p, r) => ({ safe_regex: { regex: `/api/${p}/${r}/[a-z]+` } })) })])],
];

const HARNESS = String.raw`
local cjson = require("cjson.safe")
local cases = cjson.decode(assert(io.open(arg[1])):read("*a"))
local n = tonumber(arg[2])
local headers = { ["x-team"] = "team-9-9", ["user-agent"] = "bench" }
ngx.req.get_headers = function() return headers end
package.loaded["apisix.core"] = {
  log = { warn = function() end },
  response = { set_header = function() end },
  utils = { uri_safe_encode = function(s) return s end },
}
for _, case in ipairs(cases) do
  local fn = loadstring(case.lua)()
  local var = { uri = "/api/9/9/x", request_method = "GET", real_request_uri = "/api/9/9/x", remote_addr = "10.244.1.5",
                connection_original_dst = "10.244.2.9:8080", is_args = "", upstream_uri = "" }
  local ctx = { var = var }
  local status = fn({}, ctx)
  for _ = 1, n / 10 do fn({}, ctx) end -- warm-up (JIT)
  local t0 = os.clock() -- CPU time: the machine is shared
  for _ = 1, n do fn({}, ctx) end
  print(cjson.encode({ name = case.name, ns = (os.clock() - t0) * 1e9 / n, status = status or 0 }))
end
`;

const dir = mkdtempSync(join(tmpdir(), 'bench-rbac-'));
try {
  writeFileSync(join(dir, 'harness.lua'), HARNESS);
  writeFileSync(join(dir, 'cases.json'), JSON.stringify(cases.map(([name, lua]) => ({ name, lua }))));
  const res = spawnSync(join(runtime, 'prefix/openresty/bin/resty'), [join(dir, 'harness.lua'), join(dir, 'cases.json'), String(ITERATIONS)], { encoding: 'utf8' });
  if (res.status !== 0) throw new Error(res.stderr.slice(0, 2000));
  const rows = res.stdout.trim().split('\n').map((l) => JSON.parse(l));
  const base = rows[0].ns;
  console.log(`${ITERATIONS} evaluations each, one request (GET /api/9/9/x, allowed by the last rule only):`);
  for (const r of rows) {
    console.log(`  ${r.name.padEnd(46)} ${(r.ns / 1000).toFixed(3).padStart(7)} µs/request  (+${((r.ns - base) / 1000).toFixed(3)} µs over baseline)  ${r.status === 403 ? 'denied' : 'allowed'}`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
