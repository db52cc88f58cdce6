// least_request.lua (Envoy's LEAST_REQUEST as the picker of APISIX's least_conn upstreams) under the
// runtime's LuaJIT, driven as APISIX's balancer drives a picker (get, then after_balance), beside
// APISIX's own least_conn on the same servers: one-at-a-time requests reach every server (APISIX's
// never picks one of three), a busy server is avoided, weights are followed, a retry skips the
// servers tried. On a real APISIX: test/dataplane/least-request.test.ts.
import { beforeAll, expect, it } from 'vitest';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingResty, runResty } from '../support/resty-lua.js';

const SCRIPT = String.raw`
local cjson = require("cjson.safe")
cjson.encode_empty_table_as_object(true)
package.loaded["apisix.core"] = { table = { insert = table.insert }, tablepool = { fetch = function() return {} end, release = function() end } }
math.randomseed(7)
local ours = require("apisix_mesh.least_request")
local apisix_own = require("apisix.balancer.least_conn")
ours.install()
local out = { installed = require("apisix.balancer.least_conn") == ours }

local A, B, C = "10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"
-- n requests one at a time (each done before the next): how many each server got
local function one_at_a_time(picker, n)
  local got = {}
  for _ = 1, n do
    local ctx = {}
    local s = assert(picker.get(ctx))
    ctx.balancer_server = s
    got[s] = (got[s] or 0) + 1
    picker.after_balance(ctx, false)
  end
  return got
end
out.sequential = one_at_a_time(ours.new({ [A] = 1, [B] = 1, [C] = 1 }, {}), 3000)
out.apisix_sequential = one_at_a_time(apisix_own.new({ [A] = 1, [B] = 1, [C] = 1 }, {}), 3000)

-- A has 5 requests in flight (never finished): the others are preferred
local busy = ours.new({ [A] = 1, [B] = 1, [C] = 1 }, {})
local held = 0
while busy.active(A) < 5 do
  local ctx = {}
  local s = busy.get(ctx)
  if s ~= A then ctx.balancer_server = s; busy.after_balance(ctx, false) end
  held = held + 1
  assert(held < 1000)
end
out.busy = one_at_a_time(busy, 3000)
out.busy_active = { busy.active(A), busy.active(B), busy.active(C) }

out.weighted = one_at_a_time(ours.new({ [A] = 1, [B] = 3 }, {}), 4000)

-- a retry: the servers tried so far are skipped; with all tried, none
local r = ours.new({ [A] = 1, [B] = 1, [C] = 1 }, {})
local ctx = {}
local tries = {}
for i = 1, 4 do
  local s, err = r.get(ctx)
  tries[i] = s or ("none: " .. tostring(err))
  if s then ctx.balancer_server = s; r.after_balance(ctx, true) end
end
out.tries = tries
out.retry_active = { r.active(A), r.active(B), r.active(C) }
print(cjson.encode(out))
`;

interface Out {
  installed: boolean;
  sequential: Record<string, number>;
  apisix_sequential: Record<string, number>;
  busy: Record<string, number>;
  busy_active: number[];
  weighted: Record<string, number>;
  tries: string[];
  retry_active: number[];
}

const [A, B, C] = ['10.0.0.1:8080', '10.0.0.2:8080', '10.0.0.3:8080'];

describeWhenAvailable('least_request.lua (Envoy\'s LEAST_REQUEST) under the runtime\'s LuaJIT', missingResty(), () => {
  let out: Out;
  beforeAll(() => {
    [out] = runResty<Out>(SCRIPT, {}, { modules: true, apisix: true });
  });

  it('answers for APISIX\'s least_conn once installed', () => {
    expect(out.installed).toBe(true);
  });

  it('one request at a time reaches every server about equally (APISIX\'s own least_conn leaves one of three out)', () => {
    for (const s of [A, B, C]) expect(out.sequential[s] ?? 0).toBeGreaterThan(850);
    // the premise: APISIX's heap, with every score tied, alternates between two of the three
    expect(Object.values(out.apisix_sequential).filter((n) => n > 0)).toHaveLength(2);
  });

  it('a server with requests in flight is picked only when both draws fall on it (1/9)', () => {
    expect(out.busy[A] ?? 0).toBeLessThan(3000 / 9 + 120);
    expect(out.busy[A] ?? 0).toBeGreaterThan(3000 / 9 - 120);
    expect(out.busy_active).toEqual([5, 0, 0]);
  });

  it('differing weights: picked in proportion (1:3)', () => {
    expect(out.weighted[A]).toBeGreaterThan(1000 - 150);
    expect(out.weighted[A]).toBeLessThan(1000 + 150);
    expect(out.weighted[A]! + out.weighted[B]!).toBe(4000);
  });

  it('a retry skips the servers tried; past all of them, none (APISIX then fails over or answers 502)', () => {
    expect(new Set(out.tries.slice(0, 3))).toEqual(new Set([A, B, C]));
    expect(out.tries[3]).toBe('none: all upstream servers tried');
    expect(out.retry_active).toEqual([0, 0, 0]);
  });
});
