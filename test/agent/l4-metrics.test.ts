// The L4 front's metrics store (l4_metrics.lua) under the runtime's LuaJIT with the shared
// dictionary both subsystems share: label sets are bounded (the 201st and later go to the
// reporter's overflow series, nothing is lost), every count lands, hostile service names stay
// inside one label. The counting on a real APISIX: test/dataplane/peer-metrics.test.ts.
import { beforeAll, expect, it } from 'vitest';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingResty, runResty } from '../support/resty-lua.js';
import { samples, type Sample } from '../support/prometheus-samples.js';

const SCRIPT = String.raw`
local cjson = require("cjson.safe")
package.loaded["apisix_mesh.istio_metrics_conf"] = { local_workload = { workload = "web", namespace = "shop", cluster = "c1" } }
local m = require("apisix_mesh.l4_metrics")
m.init_worker()
local input = cjson.decode(assert(io.open(arg[1])):read("*a"))
for i = 1, input.services do
  local id = m.opened({ outbound = true, service = "svc" .. i .. ".ns.svc.cluster.local", service_name = "svc" .. i, service_namespace = "ns" })
  m.closed(id, 10, 20)
end
-- the same set again: no new series
m.closed(m.opened({ outbound = true, service = "svc1.ns.svc.cluster.local", service_name = "svc1", service_namespace = "ns" }), 1, 2)
m.opened({ outbound = false, service = input.hostile })
m.rbac_denied()
m.rbac_denied()
print(cjson.encode({ text = table.concat(m.exposition({})) }))
`;


describeWhenAvailable('l4_metrics.lua under the runtime\'s LuaJIT', missingResty(), () => {
  let all: Sample[] = [];
  let text = '';
  beforeAll(() => {
    const [out] = runResty<{ text: string }>(SCRIPT, { services: 250, hostile: 'x"} 1\nistio_tcp_sent_bytes_total{a="b' }, { modules: true, shdicts: ['nacos 10m'] });
    text = out!.text;
    all = samples(text);
  });
  const of = (name: string) => all.filter((s) => s.name === name);
  const sum = (name: string) => of(name).reduce((n, s) => n + s.value, 0);

  it('at most 200 label sets; the rest counted in the reporter\'s overflow series, no count lost', () => {
    const opened = of('istio_tcp_connections_opened_total');
    // 200 sets and each reporter's overflow (the inbound connection came after the bound)
    expect(opened.length).toBe(202);
    const overflow = opened.filter((s) => s.labels['reporter'] === 'source' && s.labels['destination_service'] === 'unknown');
    expect(overflow.map((s) => s.value)).toEqual([250 - 200]);
    expect(opened.filter((s) => s.labels['reporter'] === 'destination').map((s) => [s.labels['destination_service'], s.value])).toEqual([['unknown', 1]]);
    expect(overflow[0]!.labels).toMatchObject({ source_workload: 'web', source_workload_namespace: 'shop', source_cluster: 'c1' });
    expect(sum('istio_tcp_connections_opened_total')).toBe(252);
    expect(sum('istio_tcp_connections_closed_total')).toBe(251);
    expect(sum('istio_tcp_received_bytes_total')).toBe(250 * 10 + 1);
    expect(sum('istio_tcp_sent_bytes_total')).toBe(250 * 20 + 2);
    expect(of('istio_tcp_connections_opened_total').find((s) => s.labels['destination_service_name'] === 'svc1')!.value).toBe(2);
  });

  it('a hostile value cannot break the exposition; the RBAC denials are one counter', () => {
    // the inbound set with the hostile name went to the overflow (the bound was reached): every line still parses
    for (const line of text.split('\n').filter((l) => l && !l.startsWith('#'))) expect(line).toMatch(/^[a-z_]+(\{[^\n]*\})? \d+$/);
    expect(text).not.toContain('"}\n1');
    expect(of('apisix_mesh_network_rbac_denied_total').map((s) => s.value)).toEqual([2]);
    expect(Object.keys(of('istio_tcp_sent_bytes_total')[0]!.labels)).toHaveLength(23);
  });
});
