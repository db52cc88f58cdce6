// The relay's SAN check (agent/l4/lua/apisix_mesh/peer_identity.lua) under the runtime's LuaJIT:
// Envoy's `match_subject_alt_names` semantics for the matcher kinds the agent accepts.
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingResty, runResty } from '../support/resty-lua.js';
import type { SanMatcher } from '../../agent/mtls/upstream-tls.js';

const LUA_DIR = fileURLToPath(new URL('../../agent/l4/lua/', import.meta.url));

interface Case {
  names: Array<{ type: string; value: string }>;
  matchers: SanMatcher[];
}

function sanMatches(cases: Case[]): boolean[] {
  const script = String.raw`
local cjson = require("cjson.safe")
package.path = ${JSON.stringify(`${LUA_DIR}?.lua;`)} .. package.path
local peer = require("apisix_mesh.peer_identity")
local f = assert(io.open(arg[1]))
local cases = cjson.decode(f:read("*a"))
f:close()
for _, c in ipairs(cases) do
  print(cjson.encode({ ok = peer.san_matches(c.names, c.matchers) }))
end`;
  return runResty<{ ok: boolean }>(script, cases).map((r) => r.ok);
}

const ID = 'spiffe://cluster.local/ns/shop/sa/cart';
const uri = (value: string) => ({ type: 'URI', value });
const dns = (value: string) => ({ type: 'DNS', value });

describeWhenAvailable('the TLS relay\'s SAN check under OpenResty', missingResty(), () => {
  it('matches URI SANs exactly, by prefix, suffix, substring, with ignore_case; an empty list accepts any', () => {
    expect(
      sanMatches([
        { names: [uri(ID)], matchers: [{ kind: 'exact', value: ID }] },
        { names: [uri(`${ID}x`)], matchers: [{ kind: 'exact', value: ID }] },
        { names: [uri('spiffe://cluster.local/ns/shop/sa/other')], matchers: [{ kind: 'exact', value: ID }, { kind: 'prefix', value: 'spiffe://cluster.local/ns/shop/' }] },
        { names: [uri('spiffe://other.td/ns/shop/sa/cart')], matchers: [{ kind: 'prefix', value: 'spiffe://cluster.local/' }] },
        { names: [uri(ID)], matchers: [{ kind: 'suffix', value: '/sa/cart' }] },
        { names: [uri(ID)], matchers: [{ kind: 'contains', value: '/ns/shop/' }] },
        { names: [uri(ID.toUpperCase())], matchers: [{ kind: 'exact', value: ID }] },
        { names: [uri(ID.toUpperCase())], matchers: [{ kind: 'exact', value: ID, ignore_case: true }] },
        { names: [uri(ID)], matchers: [] },
        { names: [], matchers: [{ kind: 'exact', value: ID }] },
      ]),
    ).toEqual([true, false, true, false, true, true, false, true, true, false]);
  });

  it('matches DNS SANs with Envoy\'s one-label wildcard for exact matchers; IP and email SANs as strings (Envoy: DNS, URI, EMAIL, IP_ADDRESS for untyped matchers); other types never', () => {
    expect(
      sanMatches([
        { names: [dns('api.example.com')], matchers: [{ kind: 'exact', value: 'api.example.com' }] },
        { names: [dns('*.example.com')], matchers: [{ kind: 'exact', value: 'api.example.com' }] },
        { names: [dns('*.example.com')], matchers: [{ kind: 'exact', value: 'a.b.example.com' }] },
        { names: [dns('*.example.com')], matchers: [{ kind: 'prefix', value: 'api.' }] },
        { names: [{ type: 'email', value: 'ops@example.com' }], matchers: [{ kind: 'exact', value: 'ops@example.com' }] },
        { names: [{ type: 'IP', value: '10.1.0.1' }], matchers: [{ kind: 'exact', value: '10.1.0.1' }] },
        { names: [{ type: 'dirName', value: ID }], matchers: [{ kind: 'exact', value: ID }] },
      ]),
    ).toEqual([true, true, false, false, true, true, false]);
  });
});
