// The labels of Istio's standard metrics as the sidecar computes them: the local workload the agent
// writes for the Lua (agent/telemetry/local-workload.ts) and the pure label functions
// (istio_labels.lua) under the runtime's LuaJIT, hostile values included. The counting on a real
// APISIX: test/dataplane/istio-metrics.test.ts.
import { beforeAll, describe, expect, it } from 'vitest';
import { LUA_SOURCE_DIR } from '../../agent/l4/lua-modules.js';
import { istioMetricsConfLua, localWorkload, workloadName } from '../../agent/telemetry/local-workload.js';
import { nodeIdentityFromEnv, type NodeIdentity } from '../../agent/xds/node.js';
import { missingResty, runResty } from '../support/resty-lua.js';
import { describeWhenAvailable } from '../support/requirements.js';

function identity(podName: string, labels: Record<string, string>, meta: Record<string, string> = {}): NodeIdentity {
  const env: Record<string, string> = { POD_NAME: podName, POD_NAMESPACE: 'shop', INSTANCE_IP: '10.0.0.1' };
  for (const [k, v] of Object.entries(meta)) env[`ISTIO_META_${k}`] = v;
  return { ...nodeIdentityFromEnv(env), labels };
}

describe('the local workload in Istio\'s metrics', () => {
  it('is the controller\'s name as Istio reports it, guessed from the running pod', () => {
    expect(workloadName(identity('reviews-v1-5d8f7c9b4-x7k2p', { 'pod-template-hash': '5d8f7c9b4' }))).toBe('reviews-v1');
    expect(workloadName(identity('db-2', { 'statefulset.kubernetes.io/pod-name': 'db-2' }))).toBe('db');
    expect(workloadName(identity('backup-28934-abcde', { 'job-name': 'backup-28934' }))).toBe('backup-28934');
    expect(workloadName(identity('lonely', {}))).toBe('lonely');
    // a hash that is not the pod name's: the pod's name
    expect(workloadName(identity('web-abc-x7k2p', { 'pod-template-hash': '5d8f7c9b4' }))).toBe('web-abc-x7k2p');
    // what Istio's injector sets wins
    expect(workloadName(identity('reviews-v1-5d8f7c9b4-x7k2p', { 'pod-template-hash': '5d8f7c9b4' }, { WORKLOAD_NAME: 'reviews-v1-rollout' }))).toBe('reviews-v1-rollout');
  });

  it('has Istio\'s canonical service and revision with their fallbacks; absent app and version are left out', () => {
    const id = identity('web-5d8f7c9b4-x7k2p', { 'pod-template-hash': '5d8f7c9b4', 'app.kubernetes.io/name': 'shopfront', 'service.istio.io/canonical-revision': 'r7' });
    expect(localWorkload(id)).toEqual({ workload: 'web', namespace: 'shop', app: 'shopfront', canonical_service: 'shopfront', canonical_revision: 'r7', cluster: 'Kubernetes' });
    expect(localWorkload(identity('solo', {}))).toEqual({ workload: 'solo', namespace: 'shop', canonical_service: 'solo', canonical_revision: 'latest', cluster: 'Kubernetes' });
  });

  it('reaches the Lua as data: a label value that looks like code stays a string', () => {
    const text = istioMetricsConfLua({ localWorkload: { ...localWorkload(identity('x', { app: '"]] os.exit(1) --' })) }, maxSeries: 5 });
    expect(text).not.toContain('"]] os.exit');
    expect(text).toContain('["max_series"]=5');
  });
});

const SCRIPT = String.raw`
package.path = "${LUA_SOURCE_DIR}?.lua;" .. package.path
local cjson = require("cjson.safe")
local labels = require("apisix_mesh.istio_labels")
local input = cjson.decode(assert(io.open(arg[1])):read("*a"))
local function emit(v) print(cjson.encode(v)) end
for _, name in ipairs(input.clusters) do
  local host, short, ns = labels.service_of_cluster(name)
  emit({ host = host or cjson.null, name = short or cjson.null, namespace = ns or cjson.null })
end
for _, status in ipairs(input.statuses) do
  local code, flags = labels.response_code(status)
  emit({ code = code, flags = flags })
end
for _, v in ipairs(input.grpc) do emit({ grpc = labels.grpc_status(v) }) end
emit({ clean = labels.clean(input.hostile), long = #labels.clean(string.rep("a", 5000)) })
local side = labels.local_side({ workload = "web", namespace = "shop", app = "web", canonical_service = "web", canonical_revision = "v1", cluster = "c1" })
local inbound = labels.values({ outbound = false, local_side = side, peer_principal = input.hostile, mtls = true, local_principal = "spiffe://cluster.local/ns/shop/sa/web",
  protocol = "http", code = "200", grpc_status = "", flags = "-" })
local named = {}
for i, n in ipairs(labels.NAMES) do named[n] = inbound[i] end
emit({ inbound = named, overflow = labels.label_text(labels.overflow(side, true)) })
-- identity (the series' lookup key) equal exactly when the label text is, hostile values included
local function set(service, name)
  return labels.values({ outbound = true, local_side = side, service = service, service_name = name, protocol = "http", code = "200", grpc_status = "", flags = "-" })
end
local sets = { set(input.split[1], input.split[2]), set(input.split[3], input.split[4]), set(input.split[1], input.split[2]), set("x", "y"), set(nil, "y") }
local same = {}
for i = 1, #sets do
  for j = 1, #sets do
    same[#same + 1] = { labels.identity(sets[i]) == labels.identity(sets[j]), labels.label_text(sets[i]) == labels.label_text(sets[j]) }
  end
end
emit({ same = same })
`;

describeWhenAvailable('istio_labels.lua under the runtime\'s LuaJIT', missingResty(), () => {
  const hostile = 'spiffe://x/"} 1\nistio_requests_total{a="b\\ é';
  let out: Array<Record<string, unknown>> = [];
  beforeAll(() => {
    out = runResty<Record<string, unknown>>(SCRIPT, {
      clusters: ['outbound|80||reviews.shop.svc.cluster.local', 'outbound|443|v2|api.example.com', 'inbound|8080||', 'PassthroughCluster', 'outbound|x||a.b.svc.c'],
      statuses: [200, 503, 499, 0, 700, 99],
      grpc: ['0', '16', '17', '1a', ''],
      hostile,
      // two label sets that one separator character would join into the same key
      split: ['a"b', 'c', 'a', 'b"c'],
    });
  });

  it('the destination service of an outbound cluster; none for the others', () => {
    expect(out.slice(0, 5)).toEqual([
      { host: 'reviews.shop.svc.cluster.local', name: 'reviews', namespace: 'shop' },
      { host: 'api.example.com', name: 'api.example.com', namespace: 'unknown' },
      { host: null, name: null, namespace: null },
      { host: null, name: null, namespace: null },
      { host: null, name: null, namespace: null },
    ]);
  });

  it('response codes 100-599, else 0; a client gone first (499) is Envoy\'s 0 with DC; gRPC statuses 0-16', () => {
    expect(out.slice(5, 11)).toEqual([
      { code: '200', flags: '-' }, { code: '503', flags: '-' }, { code: '0', flags: 'DC' }, { code: '0', flags: '-' }, { code: '0', flags: '-' }, { code: '0', flags: '-' },
    ]);
    expect(out.slice(11, 16).map((o) => o['grpc'])).toEqual(['0', '16', '', '', '']);
  });

  it('a hostile value cannot break the exposition: quotes, backslashes, control and non-ASCII bytes become _, at most 256 bytes', () => {
    expect(out[16]).toEqual({ clean: 'spiffe://x/_} 1_istio_requests_total{a=_b_ __', long: 256 });
  });

  it('inbound over mTLS: the local side as destination, the verified peer as source principal, mutual_tls', () => {
    expect(out[17]!['inbound']).toMatchObject({
      reporter: 'destination', source_workload: 'unknown', source_principal: 'spiffe://x/_} 1_istio_requests_total{a=_b_ __',
      destination_workload: 'web', destination_workload_namespace: 'shop', destination_app: 'web', destination_version: 'unknown',
      destination_principal: 'spiffe://cluster.local/ns/shop/sa/web', destination_canonical_service: 'web', destination_canonical_revision: 'v1',
      destination_cluster: 'c1', destination_service: 'unknown', connection_security_policy: 'mutual_tls', response_code: '200',
    });
    expect(out[17]!['overflow']).toContain('reporter="source",source_workload="web",source_workload_namespace="shop",source_principal="unknown",source_app="web"');
    expect(out[17]!['overflow']).toContain('response_code="unknown"');
  });

  it('a request\'s series is found by the label set\'s identity, equal exactly when the label text is', () => {
    const same = out[18]!['same'] as Array<[boolean, boolean]>;
    expect(same).toHaveLength(25);
    for (const [byIdentity, byText] of same) expect(byIdentity).toBe(byText);
    // the sets differ where they should (not every pair equal)
    expect(same.filter(([, byText]) => !byText).length).toBeGreaterThan(0);
  });
});
