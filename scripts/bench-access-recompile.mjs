#!/usr/bin/env node
// `BENCH_BASELINE_ROOT=<built checkout from before apisix-mesh-access> APISIX_RUNTIME=… node scripts/bench-access-recompile.mjs`
// What a request on one of more than 8 busy routes paid for its access-phase Lua before it moved
// into the apisix-mesh-access plugin: APISIX's serverless plugin keeps compiled functions for 8
// routes (core.lrucache `type = "plugin"`, 8 items), so on a miss it compiles the route's function
// strings again (loadstring + run each chunk) — per request. Measured on the baseline's own
// generated Lua (the retry hand-over Istio's default retry policy gives every outbound route, a
// mirror, the original-destination pass-through), under the APISIX runtime's resty (CPU time).
// The plugin compiles nothing per route: its route config is data (scripts/bench-dataplane.mjs
// with BENCH_ROUTES=20 measures both trees end to end).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const root = process.env.BENCH_BASELINE_ROOT;
const runtime = process.env.APISIX_RUNTIME;
if (!root || !runtime) {
  console.log('skipped: set BENCH_BASELINE_ROOT (a built checkout whose access-phase work was serverless-pre-function code) and APISIX_RUNTIME');
  process.exit(0);
}
const { retryHandOverLua, RETRY_LOCATIONS } = await import(join(root, 'dist/agent/translate/retries.js'));
const { mirrorLua } = await import(join(root, 'dist/agent/translate/mirror.js'));
const { originalDestinationLua } = await import(join(root, 'dist/agent/translate/original-destination.js'));
const handOver = retryHandOverLua(RETRY_LOCATIONS[1], { connect: true, reset: false, timeout: false });
const mirror = mirrorLua({ request_mirror_policies: [{ cluster: 'outbound|80|v2|reviews.default.svc.cluster.local' }] }, 300, () => {});
const passthrough = originalDestinationLua({ ports: { outbound: 15001, inbound: 15006 }, connectTimeout: 10 });
const cases = [
  ['retry hand-over (Istio default)', [handOver]],
  ['mirror + retry hand-over', [mirror, handOver]],
  ['pass-through (allow_any)', [passthrough]],
];
const dir = mkdtempSync(join(tmpdir(), 'bench-access-recompile-'));
try {
  writeFileSync(join(dir, 'cases.json'), JSON.stringify(cases));
  writeFileSync(join(dir, 'bench.lua'), String.raw`
local cjson = require("cjson.safe")
local cases = cjson.decode(assert(io.open(arg[1])):read("*a"))
local n = 20000
-- as serverless/init.lua's load_funcs: each string loaded and run, its function kept
local function load_funcs(functions)
  local out = {}
  for i, src in ipairs(functions) do out[i] = loadstring(src)() end
  return out
end
for _, c in ipairs(cases) do
  local bytes = 0
  for _, src in ipairs(c[2]) do bytes = bytes + #src end
  for _ = 1, 1000 do load_funcs(c[2]) end
  local t0 = os.clock()
  for _ = 1, n do load_funcs(c[2]) end
  print(string.format("  %-32s %6d bytes of Lua: compile per request on a cache miss %6.1f us", c[1], bytes, (os.clock() - t0) * 1e6 / n))
end
`);
  const res = spawnSync(join(runtime, 'prefix/openresty/bin/resty'), [join(dir, 'bench.lua'), join(dir, 'cases.json')], { encoding: 'utf8' });
  if (res.status !== 0) throw new Error(res.stderr.slice(0, 2000));
  console.log('serverless-pre-function recompiled on a cache miss (baseline tree):');
  process.stdout.write(res.stdout);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
