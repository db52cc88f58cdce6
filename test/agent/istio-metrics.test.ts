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
