// Istio's HTTP metrics store (istio_metrics.lua) under the runtime's LuaJIT with a real shared
// dictionary: a request's counts wait in its worker's table and reach the dictionary at a flush
// (the worker's timer every FLUSH_INTERVAL, or a call), whole: the request counter, the three
// histograms' buckets and sums; label sets beyond the bound go to the overflow series. The counting
// on a real APISIX: test/dataplane/istio-metrics.test.ts.
import { beforeAll, expect, it } from 'vitest';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingResty, runResty } from '../support/resty-lua.js';
import { find, samples, type Sample } from '../support/prometheus-samples.js';

const SCRIPT = String.raw`
local cjson = require("cjson.safe")
package.loaded["apisix_mesh.istio_metrics_conf"] = { local_workload = { workload = "web", namespace = "shop", cluster = "c1" }, max_series = 3 }
local m = require("apisix_mesh.istio_metrics")
-- resty's --shdict takes no '-' in a name: the same dict under another one
m.DICT = "istio_metrics"
m.init_worker()
local function request(service, code, duration, req_bytes, resp_bytes)
  m.count({ outbound = true, service = service .. ".ns.svc.cluster.local", service_name = service, service_namespace = "ns",
            protocol = "http", code = code, grpc_status = "", flags = "-" }, duration, req_bytes, resp_bytes)
end
local text = function() return table.concat(m.exposition()) end
for _, d in ipairs({ 0.3, 0.7, 3, 3, 70000 }) do request("a", "200", d, 100, 2000) end
request("b", "503", 1, 10, 20)
request("b", "503", 1, 10, 20)
for _, s in ipairs({ "c", "d", "e" }) do request(s, "200", 1, 1, 1) end
local out = { before = text() }
m.flush()
out.flushed = text()
m.flush()
out.again = text()
request("a", "200", 1, 1, 1)
ngx.sleep(m.FLUSH_INTERVAL + 0.3)
out.timer = text()
print(cjson.encode(out))
`;

describeWhenAvailable('istio_metrics.lua under the runtime\'s LuaJIT: counts per worker, flushed to the shared dict', missingResty(), () => {
  let out: { before: string; flushed: string; again: string; timer: string };
  const requests = (all: Sample[], labels: Record<string, string>) => find(all, 'istio_requests_total', labels).map((s) => s.value);
  beforeAll(() => {
    [out] = runResty<typeof out>(SCRIPT, {}, { modules: true, shdicts: ['istio_metrics 20m'] });
  });

  it('nothing reaches the dictionary before a flush; after it every counter, bucket and sum of every request', () => {
    const before = samples(out.before).filter((s) => s.name === 'istio_requests_total');
    // the series are registered at their first request (labels and zeroed counters), counted at the flush
    expect(before.map((s) => s.value).every((v) => v === 0)).toBe(true);
    const all = samples(out.flushed);
    expect(requests(all, { destination_service_name: 'a', response_code: '200' })).toEqual([5]);
    expect(requests(all, { destination_service_name: 'b', response_code: '503' })).toEqual([2]);
    const a = { destination_service_name: 'a' };
    const bucket = (le: string) => find(all, 'istio_request_duration_milliseconds_bucket', { ...a, le }).map((s) => s.value);
    // cumulative: 0.3 ≤ 0.5; 0.7 ≤ 1; 3, 3 ≤ 5; 70000 ≤ 300000
    expect([bucket('0.5'), bucket('1'), bucket('5'), bucket('60000'), bucket('300000'), bucket('+Inf')]).toEqual([[1], [2], [4], [4], [5], [5]]);
    expect(find(all, 'istio_request_duration_milliseconds_sum', a).map((s) => s.value)).toEqual([0.3 + 0.7 + 3 + 3 + 70000]);
    expect(find(all, 'istio_request_bytes_sum', a).map((s) => s.value)).toEqual([500]);
    expect(find(all, 'istio_response_bytes_bucket', { ...a, le: '1000' }).map((s) => s.value)).toEqual([0]);
    expect(find(all, 'istio_response_bytes_bucket', { ...a, le: '2500' }).map((s) => s.value)).toEqual([5]);
    expect(find(all, 'istio_response_bytes_count', a).map((s) => s.value)).toEqual([5]);
  });

  it('beyond the bound (3 label sets) the overflow series takes the requests; a second flush adds nothing', () => {
    const all = samples(out.flushed);
    expect(requests(all, { destination_service_name: 'c' })).toEqual([1]);
    expect(requests(all, { destination_service_name: 'd' })).toEqual([]);
    expect(requests(all, { reporter: 'source', destination_service: 'unknown' })).toEqual([2]);
    expect(out.again).toBe(out.flushed);
  });

  it('the worker\'s timer flushes on its own within FLUSH_INTERVAL', () => {
    expect(requests(samples(out.timer), { destination_service_name: 'a', response_code: '200' })).toEqual([6]);
  });
});

const FACTS_SCRIPT = String.raw`
local cjson = require("cjson.safe")
cjson.encode_empty_table_as_object(false)
package.loaded["apisix_mesh.istio_metrics_conf"] = { local_workload = { workload = "web", namespace = "shop", cluster = "c1" }, max_series = 1000 }
local m = require("apisix_mesh.istio_metrics")
local labels = require("apisix_mesh.istio_labels")
m.DICT = "istio_metrics"
m.init_worker()
local local_side = labels.local_side({ workload = "web", namespace = "shop", cluster = "c1" })
math.randomseed(11)
local function one(list) return list[math.random(#list)] end
local reviews = { workload = "reviews-v1", namespace = "shop", app = "reviews", version = "v1" }
-- the same content in another table (another endpoint of the same workload), and another peer
local reviews_again = { workload = "reviews-v1", namespace = "shop", app = "reviews", version = "v1" }
local ratings = { workload = "ratings", namespace = "shop" }
local NIL = {}
local peers = { NIL, reviews, reviews_again, ratings }
local services = { NIL, "a.shop.svc.cluster.local", "b.shop.svc.cluster.local" }
local principals = { NIL, "spiffe://cluster.local/ns/shop/sa/client" }
local expected = {}
for _ = 1, 3000 do
  local peer, service, principal = one(peers), one(services), one(principals)
  local facts = {
    outbound = one({ true, false }), mtls = one({ true, false }), code = one({ "200", "503" }),
    protocol = one({ "http", "grpc" }), flags = one({ "-", "DC" }), grpc_status = one({ "", "14" }),
    service = service ~= NIL and service or nil, service_name = service ~= NIL and service:match("^[^.]+") or nil,
    service_namespace = service ~= NIL and "shop" or nil, peer = peer ~= NIL and peer or nil,
    peer_principal = principal ~= NIL and principal or nil,
    local_principal = one({ NIL, "spiffe://cluster.local/ns/shop/sa/web" }),
  }
  if facts.local_principal == NIL then facts.local_principal = nil end
  -- what the labels must be, computed apart from the metrics module
  local copy = {}
  for k, v in pairs(facts) do copy[k] = v end
  copy.local_side = local_side
  local text = labels.label_text(labels.values(copy))
  expected[text] = (expected[text] or 0) + 1
  m.count(facts, 1, 1, 1)
end
m.flush()
-- the request counters only (the histograms' lines would be tens of MB)
local counted = {}
for _, line in ipairs(m.exposition()) do
  local text, n = line:match('^istio_requests_total{(.*)} (%d+)\n$')
  if text and tonumber(n) > 0 then counted[text] = tonumber(n) end
end
-- compared here: the label texts are ~1 KiB each, thousands of them
local out = { series = 0, requests = 0, mismatches = {} }
for text, n in pairs(expected) do
  out.series = out.series + 1
  out.requests = out.requests + (counted[text] or 0)
  if counted[text] ~= n and #out.mismatches < 5 then table.insert(out.mismatches, { labels = text, expected = n, counted = counted[text] or 0 }) end
end
for text, n in pairs(counted) do
  if not expected[text] and #out.mismatches < 5 then table.insert(out.mismatches, { labels = text, expected = 0, counted = n }) end
end
print(cjson.encode(out))
`;

const CACHE_SCRIPT = String.raw`
local cjson = require("cjson.safe")
local facts_cache = require("apisix_mesh.facts_cache")
local c = facts_cache.new("peer", { "a", "b" }, 3)
local p1, p2 = {}, {}
c.set({ peer = p1, a = "x" }, "p1 x nil")
c.set({ peer = p1, a = "x", b = "y" }, "p1 x y")
c.set({ a = "x" }, "nopeer x nil")
local out = {
  p1_x = c.get({ peer = p1, a = "x" }), p1_xy = c.get({ peer = p1, a = "x", b = "y" }),
  nopeer_x = c.get({ a = "x" }), p2_x = c.get({ peer = p2, a = "x" }) or "none", y = c.get({ peer = p1, a = "y" }) or "none",
}
-- a fourth entry: past the bound the map starts over
c.set({ peer = p2, a = "x" }, "p2 x nil")
out.after_reset = { c.get({ peer = p1, a = "x" }) or "none", c.get({ peer = p2, a = "x" }) }
-- a peer table collected: its entries go with it (the cache's root table read through its upvalue)
local c2 = facts_cache.new("peer", { "a" }, 100)
local function root_entries()
  for i = 1, 10 do
    local name, value = debug.getupvalue(c2.get, i)
    if name == "root" then
      local n = 0
      for _ in pairs(value) do n = n + 1 end
      return n
    end
  end
end
local kept = {}
c2.set({ peer = {}, a = "x" }, "gone")
c2.set({ peer = kept, a = "x" }, "kept")
out.weak_before = root_entries()
collectgarbage("collect")
collectgarbage("collect")
out.weak_left = root_entries()
out.kept = c2.get({ peer = kept, a = "x" })
print(cjson.encode(out))
`;

describeWhenAvailable('istio_metrics.lua: a request\'s series found by its facts (facts_cache.lua)', missingResty(), () => {
  it('3,000 requests of random facts (peers as distinct tables of the same content too): each counted in the series its labels name', () => {
    const [out] = runResty<{ series: number; requests: number; mismatches: unknown[] }>(FACTS_SCRIPT, {}, { modules: true, shdicts: ['istio_metrics 20m'] });
    expect(out!.mismatches).toEqual([]);
    expect(out!.requests).toBe(3000);
    expect(out!.series).toBeGreaterThan(100);
    expect(out!.series).toBeLessThanOrEqual(1000);
  });

  it('the cache: nil is a value of its own, an unknown peer or value misses, past its bound it starts over, a collected peer takes its entries', () => {
    const [out] = runResty<Record<string, unknown>>(CACHE_SCRIPT, {}, { modules: true });
    expect(out).toEqual({ p1_x: 'p1 x nil', p1_xy: 'p1 x y', nopeer_x: 'nopeer x nil', p2_x: 'none', y: 'none', after_reset: ['none', 'p2 x nil'], weak_before: 2, weak_left: 1, kept: 'kept' });
  });
});
