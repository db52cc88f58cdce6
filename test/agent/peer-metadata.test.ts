// Istio's metadata exchange format as the sidecar's Lua reads and writes it (peer_metadata.lua),
// under the runtime's LuaJIT, against Struct bytes encoded by protobufjs the way Envoy sends them;
// hostile values leave the peer unknown without an error. On a real APISIX:
// test/dataplane/peer-metrics.test.ts.
import { beforeAll, expect, it } from 'vitest';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingResty, runResty } from '../support/resty-lua.js';
import { decodePeerMetadata, envoyPeerMetadata, envoyPeerMetadataBytes } from '../support/envoy-peer-metadata.js';

const SCRIPT = String.raw`
local cjson = require("cjson.safe")
local pm = require("apisix_mesh.peer_metadata")
local input = cjson.decode(assert(io.open(arg[1])):read("*a"))
for _, v in ipairs(input.values) do
  local ok, peer = pcall(pm.decode, v)
  print(cjson.encode({ ok = ok, peer = peer or cjson.null }))
end
print(cjson.encode({ encoded = pm.encode(input.local_workload) }))
`;

const RATINGS = {
  pod: 'ratings-v2-7d9c8b-abcde', namespace: 'bookinfo', workload: 'ratings-v2', cluster: 'east',
  labels: { app: 'ratings', version: 'v2', 'service.istio.io/canonical-name': 'ratings', 'service.istio.io/canonical-revision': 'v2', 'pod-template-hash': '7d9c8b' },
};

describeWhenAvailable('peer_metadata.lua under the runtime\'s LuaJIT', missingResty(), () => {
  let out: Array<{ ok?: boolean; peer?: Record<string, string> | null; encoded?: string }> = [];
  const valid = envoyPeerMetadata(RATINGS);
  const bytes = envoyPeerMetadataBytes(RATINGS);
  const hostile = [
    valid.slice(0, valid.length / 2), // cut in the middle of a field
    bytes.subarray(0, bytes.length - 3).toString('base64'),
    Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x00]).toString('base64'), // a length beyond the data
    Buffer.from([0x0b, 0x0c]).toString('base64'), // a group
    Buffer.from('not a protobuf at all, just text').toString('base64'),
    '!!!not base64!!!',
    'A'.repeat(20000),
    Buffer.from(Array.from({ length: 300 }, () => [0x0a, 0x05, 0x0a, 0x01, 0x61, 0x12, 0x00]).flat()).toString('base64'), // 300 entries
    envoyPeerMetadata({ ...RATINGS, labels: {} }).replace(/=+$/, ''), // unpadded, no labels
    '',
  ];
  beforeAll(() => {
    out = runResty(SCRIPT, {
      values: [valid, valid.replace(/=+$/, ''), ...hostile],
      local_workload: { workload: 'frontend', namespace: 'shop', app: 'frontend', version: 'v1', canonical_service: 'frontend', canonical_revision: 'v1', cluster: 'Kubernetes', instance: 'frontend-5d8f7c9b4-x7k2p' },
    }, { modules: true });
  });

  it('reads the workload, namespace, cluster and the app, version and canonical labels of Envoy\'s node metadata, padded or not', () => {
    const want = { workload: 'ratings-v2', namespace: 'bookinfo', app: 'ratings', version: 'v2', canonical_service: 'ratings', canonical_revision: 'v2', cluster: 'east' };
    expect(out[0]).toEqual({ ok: true, peer: want });
    expect(out[1]).toEqual({ ok: true, peer: want });
  });

  it('malformed, truncated, oversized or non-base64 values: the peer stays unknown, never an error', () => {
    const results = out.slice(2, 2 + hostile.length);
    for (const r of results) expect(r.ok).toBe(true);
    // all but the unpadded one without labels (valid: its workload is known) say nothing
    expect(results.slice(0, 8).map((r) => r.peer)).toEqual(Array(8).fill(null));
    expect(results[8]!.peer).toEqual({ workload: 'ratings-v2', namespace: 'bookinfo', cluster: 'east' });
    expect(results[9]!.peer).toBeNull();
  });

  it('writes our own metadata as Envoy reads it: a Struct with NAME, NAMESPACE, WORKLOAD_NAME, CLUSTER_ID and the LABELS', () => {
    const encoded = out.at(-1)!.encoded!;
    expect(encoded).toMatch(/^[A-Za-z0-9+/]+=*$/);
    expect(decodePeerMetadata(encoded)).toEqual({
      fields: {
        NAME: { stringValue: 'frontend-5d8f7c9b4-x7k2p' },
        NAMESPACE: { stringValue: 'shop' },
        WORKLOAD_NAME: { stringValue: 'frontend' },
        CLUSTER_ID: { stringValue: 'Kubernetes' },
        LABELS: { structValue: { fields: {
          app: { stringValue: 'frontend' }, version: { stringValue: 'v1' },
          'service.istio.io/canonical-name': { stringValue: 'frontend' }, 'service.istio.io/canonical-revision': { stringValue: 'v1' },
        } } },
      },
    });
  });

  it('a value is decoded once per worker: the same table for the same value; long values and the 257th distinct one decoded again', () => {
    const CACHE_SCRIPT = String.raw`
local cjson = require("cjson.safe")
local pm = require("apisix_mesh.peer_metadata")
local input = cjson.decode(assert(io.open(arg[1])):read("*a"))
local first = pm.decode(input.valid)
local out = { same = rawequal(first, pm.decode(input.valid)), bad = pm.decode(input.bad) == nil and pm.decode(input.bad) == nil }
-- a value over 4096 bytes (padding base64 decodes past): a new table each time, the same content
local a, b = pm.decode(input.long), pm.decode(input.long)
out.long_same_table = rawequal(a, b)
out.long_workload = a and a.workload or cjson.null
-- 256 other (distinct, malformed) values push the first out
for i = 1, 256 do pm.decode(ngx.encode_base64(string.char(10, 0)) .. string.rep("A", i % 50) .. i) end
local again = pm.decode(input.valid)
out.evicted = not rawequal(first, again) and again.workload == first.workload
print(cjson.encode(out))
`;
    const long = envoyPeerMetadata({ ...RATINGS, labels: { ...RATINGS.labels, filler: 'x'.repeat(3500) } });
    expect(long.length).toBeGreaterThan(4096);
    const [res] = runResty<Record<string, unknown>>(CACHE_SCRIPT, { valid, bad: '%%%not-base64%%%', long }, { modules: true });
    expect(res).toEqual({ same: true, bad: true, long_same_table: false, long_workload: 'ratings-v2', evicted: true });
  });
});
