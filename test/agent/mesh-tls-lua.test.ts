// The pure parts of inbound mTLS in the sidecar's Lua, under the runtime's LuaJIT with the real
// lua-resty-openssl and shared dictionary: the peer facts of a verified client certificate (principal,
// Envoy's x-forwarded-client-cert), the chain's SAN matchers (mesh_tls.lua), and the hand-off record
// that carries them from the stream side to the HTTP side (handoff.lua). What APISIX does with them
// on a real connection: test/dataplane/mtls-inbound.test.ts.
import { spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import forge from 'node-forge';
import { beforeAll, expect, it } from 'vitest';
import { LUA_SOURCE_DIR } from '../../agent/l4/lua-modules.js';
import { findApisixRuntime } from '../support/pod/apisix-runtime.js';
import { missingResty } from '../support/rbac-lua.js';
import { describeWhenAvailable } from '../support/requirements.js';
import { createTestPki, issueLeaf, rsaKey, type TestPki } from '../support/test-pki.js';

const BY = 'spiffe://cluster.local/ns/shop/sa/web';

const SCRIPT = String.raw`
package.path = arg[1] .. "?.lua;" .. arg[2] .. "/deps/share/lua/5.1/?.lua;" .. arg[2] .. "/deps/share/lua/5.1/?/init.lua;" .. package.path
local cjson = require("cjson.safe")
package.loaded["apisix.core"] = { log = { warn = function() end, error = function() end } }
package.loaded["apisix_mesh.identity"] = { current = function() return { spiffe_id = "${BY}" } end }
local mesh_tls = require("apisix_mesh.mesh_tls")
local handoff = require("apisix_mesh.handoff")
local input = cjson.decode(assert(io.open(arg[3])):read("*a"))
local function emit(v) print(cjson.encode(v)) end
for _, c in ipairs(input.peers) do
  ngx.var = { ssl_client_verify = c.verify, ssl_client_raw_cert = c.pem }
  local peer, err = mesh_tls.peer()
  if peer then
    local matches = {}
    for i, m in ipairs(c.matchers) do matches[i] = mesh_tls.peer_matches(peer, m ~= "" and m or nil) end
    emit({ principal = peer.principal, xfcc = mesh_tls.xfcc(peer), matches = matches })
  else
    emit({ refused = err })
  end
end
for _, r in ipairs(input.records) do
  local address = assert(handoff.reserve("inbound", "10.0.0.9", 41000, r.dst, r.peer_sans ~= "" and r.peer_sans or nil))
  local h = handoff.lookup(address)
  emit({ direction = h.direction, client_ip = h.client_ip, client_port = h.client_port, dst = h.dst, peer_sans = h.peer_sans or cjson.null })
  handoff.release(address)
end
`;

interface PeerCase {
  verify: string;
  pem: string;
  matchers: string[];
}

function run(peers: PeerCase[], records: Array<{ dst: string; peer_sans: string }>): Array<Record<string, unknown>> {
  const runtime = findApisixRuntime();
  if (typeof runtime === 'string') throw new Error(runtime);
  const dir = mkdtempSync(join(tmpdir(), 'mesh-tls-lua-'));
  try {
    writeFileSync(join(dir, 'script.lua'), SCRIPT);
    writeFileSync(join(dir, 'input.json'), JSON.stringify({ peers, records }));
    const res = spawnSync(join(runtime.openrestyBin, 'resty'), ['--shdict', 'nacos 1m', join(dir, 'script.lua'), LUA_SOURCE_DIR, runtime.apisixHome, join(dir, 'input.json')], { encoding: 'utf8', timeout: 60_000 });
    if (res.status !== 0 || res.stderr.trim()) throw new Error(`resty failed: ${res.stderr.slice(0, 2000)}`);
    return res.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A leaf of the test PKI with these URI SANs and subject. */
function leaf(pki: TestPki, uris: string[], subject: Array<{ shortName: string; value: string }> = []): string {
  const key = rsaKey();
  const cert = issueLeaf(pki.intermediate, forge.pki.setRsaPublicKey(key.n, key.e), uris[0]!, 3600);
  cert.setSubject(subject);
  cert.setExtensions([{ name: 'subjectAltName', altNames: uris.map((value) => ({ type: 6, value })), critical: true }]);
  cert.sign(pki.intermediate.key, forge.md.sha256.create());
  return forge.pki.certificateToPem(cert);
}

const hash = (pem: string) => new X509Certificate(pem).fingerprint256.replace(/:/g, '').toLowerCase();

describeWhenAvailable('inbound mTLS in the sidecar\'s Lua (mesh_tls.lua, handoff.lua)', missingResty(), () => {
  let pki: TestPki;
  beforeAll(() => {
    pki = createTestPki();
  });

  it('a verified peer: its first URI SAN is the principal; XFCC as Envoy writes it; SAN matchers exact and prefix, any of them; unverified peers refused', () => {
    const sleep = leaf(pki, ['spiffe://cluster.local/ns/shop/sa/sleep']);
    const two = leaf(pki, ['spiffe://td-b/ns/x/sa/y', 'spiffe://cluster.local/ns/x/sa/y']);
    const named = leaf(pki, ['spiffe://cluster.local/ns/shop/sa/named'], [{ shortName: 'CN', value: 'named' }]);
    const matchers = ['', 'p:spiffe://cluster.local/', 'e:spiffe://cluster.local/ns/shop/sa/sleep', 'p:spiffe://other/ e:spiffe://nope', 'p:spiffe://other/ p:spiffe://cluster.local/ns/'];
    const out = run(
      [
        { verify: 'SUCCESS', pem: sleep, matchers },
        { verify: 'SUCCESS', pem: two, matchers },
        { verify: 'SUCCESS', pem: named, matchers: [] },
        { verify: 'FAILED:unable to get local issuer certificate', pem: sleep, matchers: [] },
        { verify: 'NONE', pem: '', matchers: [] },
        { verify: 'SUCCESS', pem: '-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n', matchers: [] },
      ],
      [],
    );
    expect(out[0]).toEqual({
      principal: 'spiffe://cluster.local/ns/shop/sa/sleep',
      xfcc: `By=${BY};Hash=${hash(sleep)};Subject="";URI=spiffe://cluster.local/ns/shop/sa/sleep`,
      matches: [true, true, true, false, true],
    });
    // every URI SAN goes into XFCC, the first is the principal; a matcher matches any of them
    expect(out[1]).toEqual({
      principal: 'spiffe://td-b/ns/x/sa/y',
      xfcc: `By=${BY};Hash=${hash(two)};Subject="";URI=spiffe://td-b/ns/x/sa/y;URI=spiffe://cluster.local/ns/x/sa/y`,
      matches: [true, true, false, false, true],
    });
    expect(out[2]!['xfcc']).toBe(`By=${BY};Hash=${hash(named)};Subject="CN=named";URI=spiffe://cluster.local/ns/shop/sa/named`);
    expect(out[3]).toEqual({ refused: 'client certificate not verified: FAILED:unable to get local issuer certificate' });
    expect(out[4]).toEqual({ refused: 'client certificate not verified: NONE' });
    expect(String(out[5]!['refused'])).toMatch(/^client certificate does not parse: /);
  });

  it('the hand-off record carries the chain\'s SAN matchers to the HTTP side, and nothing when there are none', () => {
    const out = run([], [
      { dst: '10.0.0.5:8080', peer_sans: 'p:spiffe://cluster.local/ e:spiffe://td-b/ns/x/sa/y' },
      { dst: '10.0.0.5:8080', peer_sans: '' },
      { dst: '[fd00::5]:8080', peer_sans: 'p:spiffe://cluster.local/' },
    ]);
    expect(out).toEqual([
      { direction: 'inbound', client_ip: '10.0.0.9', client_port: 41000, dst: '10.0.0.5:8080', peer_sans: 'p:spiffe://cluster.local/ e:spiffe://td-b/ns/x/sa/y' },
      { direction: 'inbound', client_ip: '10.0.0.9', client_port: 41000, dst: '10.0.0.5:8080', peer_sans: null },
      { direction: 'inbound', client_ip: '10.0.0.9', client_port: 41000, dst: '[fd00::5]:8080', peer_sans: 'p:spiffe://cluster.local/' },
    ]);
  });
});
