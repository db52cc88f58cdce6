// Envoy's network RBAC (Istio's AuthorizationPolicy on a TCP port): compiled by the agent
// (agent/policy/rbac.ts, network scope), carried in the L4 front's chain object (agent/l4/), and
// judged per connection by the front's Lua (agent/l4/lua/apisix_mesh/l4_rbac.lua, the same
// evaluator as HTTP's), which runs here under the APISIX runtime's resty with real PCRE.
import { describe, expect, it } from 'vitest';
import { fromCanonical } from '../../agent/xds/codec.js';
import { TYPE_URL } from '../../agent/xds/protos.js';
import type { Cluster, Listener } from '../../agent/xds/envoy-types.js';
import { compileNetworkRbacFilter, type CompiledRbacFilter, type NetworkRbac } from '../../agent/policy/rbac.js';
import { rbacFilterData } from '../../agent/policy/rbac-plugin.js';
import { l4Listener } from '../../agent/l4/listener-chains.js';
import { assembleL4Listener } from '../../agent/l4/assemble.js';
import { translateCluster, type ClusterTranslation } from '../../agent/translate/cluster.js';
import type { ApisixUpstream } from '../../agent/translate/apisix-types.js';
import { translateListener } from '../../agent/translate/listener.js';
import { LUA_SOURCE_DIR } from '../../agent/l4/lua-modules.js';
import { inboundCluster, rbacNetworkFilter, virtualInbound } from '../support/istio-xds.js';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingResty } from '../support/rbac-lua.js';
import { runResty } from '../support/resty-lua.js';

type Json = Record<string, unknown>;
const NETWORK_RBAC = 'type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC';

function compile(action: string, permissions: Json[], principals: Json[] = [{ any: true }]): CompiledRbacFilter {
  const config = fromCanonical<NetworkRbac>(NETWORK_RBAC, { '@type': NETWORK_RBAC, stat_prefix: 'tcp.', rules: { action, policies: { p: { permissions, principals } } } });
  return compileNetworkRbacFilter('envoy.filters.network.rbac', config)!;
}

const cidr = (address_prefix: string, prefix_len: number) => ({ address_prefix, prefix_len });

describe('network RBAC → the tree the L4 front judges', () => {
  it('keeps what a connection has: destination port and IP, source / direct-remote / remote IP (the peer: no X-Forwarded-For on a connection), the server name', () => {
    const f = compile('ALLOW', [{ destination_port: 5432 }, { destination_ip: cidr('10.244.0.0', 16) }, { requested_server_name: { exact: 'db.example.com' } }], [
      { source_ip: cidr('10.1.0.0', 16) }, { direct_remote_ip: cidr('10.2.0.0', 16) }, { remote_ip: cidr('10.3.0.0', 16) },
    ]);
    expect(f.policies[0]!.match).toEqual({
      t: 'and',
      n: [
        { t: 'or', n: [{ t: 'dport', lo: 5432, hi: 5433 }, { t: 'ip', of: 'destination', v: 4, b: [10, 244, 0, 0], len: 16 }, { t: 'sni', m: { k: 'exact', v: 'db.example.com' } }] },
        { t: 'or', n: [{ t: 'ip', of: 'direct', v: 4, b: [10, 1, 0, 0], len: 16 }, { t: 'ip', of: 'direct', v: 4, b: [10, 2, 0, 0], len: 16 }, { t: 'ip', of: 'direct', v: 4, b: [10, 3, 0, 0], len: 16 }] },
      ],
    });
  });

  it('what a connection has not is unknown (headers, paths, metadata); an authenticated principal is the peer\'s (a TCP chain has one behind Istio\'s mTLS)', () => {
    const f = compile('DENY', [{ header: { name: ':method', exact_match: 'GET' } }, { url_path: { path: { prefix: '/' } } }], [
      { authenticated: { principal_name: { exact: 'spiffe://cluster.local/ns/a/sa/b' } } },
      { metadata: { filter: 'envoy.filters.http.jwt_authn', path: [{ key: 'payload' }, { key: 'iss' }], value: { string_match: { exact: 'x' } } } },
    ]);
    const kinds = JSON.stringify(f.policies[0]!.match);
    expect(kinds).not.toMatch(/"t":"(header|path|meta)"/);
    expect((kinds.match(/"t":"unknown"/g) ?? []).length).toBe(3);
    expect(kinds).toContain('"t":"peer"');
  });

  it('a TCP chain under network RBAC carries its trees to the front; the HTTP side gets no route for its scope; a chain refused anyway carries none', () => {
    const allow = rbacNetworkFilter('ALLOW', { p: { permissions: [{ any: true }], principals: [{ source_ip: cidr('10.244.9.0', 24) }] } });
    const json = virtualInbound([{ port: 5432, service: 'pg', protocol: 'tcp', filters: [allow] }]);
    const listener = fromCanonical<Listener>(TYPE_URL.listener, json);
    const draft = l4Listener(listener)!;
    const chain = draft.chains.find((c) => c.match.port === 5432)!;
    expect(chain.target).toEqual({ kind: 'tcp', clusters: [{ name: 'inbound|5432||', weight: 1 }] });
    const clusters = new Map<string, ClusterTranslation>();
    const t = translateCluster(fromCanonical<Cluster>(TYPE_URL.cluster, inboundCluster(5432)));
    clusters.set(t.clusterName, t);
    const assembled = assembleL4Listener(draft, clusters, () => undefined, []);
    const out = assembled.chains.find((c) => c.match.port === 5432)!;
    // Envoy's inbound cluster is an original destination: the address the client dialled
    expect(out.action.kind).toBe('passthrough');
    expect(out.rbac).toEqual([{ name: 'envoy.filters.network.rbac', action: 'ALLOW', policies: [{ name: 'p', match: { t: 'and', n: [{ t: 'any' }, { t: 'ip', of: 'direct', v: 4, b: [10, 244, 9, 0], len: 24 }] } }] }]);
    // the black-hole chain of the capture port is refused: no policy on it
    expect(assembled.chains.find((c) => c.name === 'virtualInbound-blackhole')!.rbac).toBeUndefined();
    const http = translateListener(listener);
    expect([...http.rds, ...http.inline, ...http.refused].filter((x) => x.scope.port === 5432)).toEqual([]);
    expect(http.notes.filter((n) => n.reason === 'unenforced-filter')).toEqual([]);
  });
});

interface Conn {
  dst: string;
  port: number;
  client: string;
  /** detect.lua's look at the first bytes, when the front took one */
  seen?: { transport: string; sni?: string; alpn?: string[] };
  /** the verified mTLS peer's URI SAN (a chain behind Istio's mTLS, judged by the stream TLS listener) */
  principal?: string;
}

const JUDGE = String.raw`
local cjson = require("cjson.safe")
package.loaded["apisix.core"] = { log = { warn = function() end } }
local l4_rbac = require("apisix_mesh.l4_rbac")
local check = require("apisix_mesh.rbac_check")
local input = cjson.decode(assert(io.open(arg[1])):read("*a"))
for _, case in ipairs(input) do
  local filters = case.filters
  local bad = check.filters(filters)
  if bad then print(cjson.encode({ error = "rbac_check: " .. bad })) os.exit(1) end
  local c = case.conn
  local seen = c.seen
  if seen and seen.alpn then setmetatable(seen.alpn, cjson.array_mt) end
  print(cjson.encode({ denied = l4_rbac.denied_by(filters, c.dst, c.port, c.client, seen, c.principal) or false }))
end
`;

function judge(filters: CompiledRbacFilter[], conns: Conn[]): string[] {
  const data = filters.map(rbacFilterData);
  const out = runResty<{ denied: string | false }>(`package.path = ${JSON.stringify(`${LUA_SOURCE_DIR}?.lua;`)} .. package.path\n${JUDGE}`, conns.map((conn) => ({ filters: data, conn })));
  return out.map((o) => (o.denied ? 'deny' : 'allow'));
}

describeWhenAvailable('network RBAC judged by the L4 front\'s Lua (resty)', missingResty(), () => {
  const conn = (client: string, extra: Partial<Conn> = {}): Conn => ({ dst: '10.244.0.7', port: 5432, client, ...extra });

  it('ALLOW from a source CIDR: the listed client through, another refused; ALLOW on an unknown principal refuses everyone', () => {
    const allow = compile('ALLOW', [{ any: true }], [{ source_ip: cidr('10.244.9.0', 24) }]);
    expect(judge([allow], [conn('10.244.9.3'), conn('10.244.8.3'), conn('fd00::1')])).toEqual(['allow', 'deny', 'deny']);
    const principal = compile('ALLOW', [{ any: true }], [{ authenticated: { principal_name: { exact: 'spiffe://cluster.local/ns/a/sa/b' } } }]);
    expect(judge([principal], [conn('10.244.9.3')])).toEqual(['deny']);
    // Envoy's rules: a principal OR a CIDR the client is in decides without the unknown
    const either = compile('ALLOW', [{ any: true }], [{ authenticated: { principal_name: { exact: 'spiffe://x' } } }, { source_ip: cidr('10.244.9.0', 24) }]);
    expect(judge([either], [conn('10.244.9.3'), conn('10.1.1.1')])).toEqual(['allow', 'deny']);
  });

  it('DENY on a port and on a destination range; a DENY on a principal does not match a plaintext TCP connection (no principal, as in Envoy), an ALLOW on one does not allow', () => {
    const denyPort = compile('DENY', [{ destination_port: 5432 }]);
    expect(judge([denyPort], [conn('10.0.0.1'), conn('10.0.0.1', { port: 5433 })])).toEqual(['deny', 'allow']);
    const denyDst = compile('DENY', [{ destination_ip: cidr('10.244.0.0', 24) }]);
    expect(judge([denyDst], [conn('10.0.0.1'), conn('10.0.0.1', { dst: '10.244.1.7' })])).toEqual(['deny', 'allow']);
    const denyPrincipalOnPort = compile('DENY', [{ destination_port: 5432 }], [{ authenticated: { principal_name: { exact: 'spiffe://x' } } }]);
    expect(judge([denyPrincipalOnPort], [conn('10.0.0.1'), conn('10.0.0.1', { port: 6000 })])).toEqual(['allow', 'allow']);
    const allowPrincipal = compile('ALLOW', [{ any: true }], [{ authenticated: { principal_name: { exact: 'spiffe://x' } } }]);
    expect(judge([allowPrincipal], [conn('10.0.0.1')])).toEqual(['deny']);
  });

  it('behind Istio\'s mTLS, the verified principal: Istio\'s principals (exact, filter state) and namespaces (regex) match it, DENY on one closes only that peer', () => {
    const sleep = 'spiffe://cluster.local/ns/shop/sa/sleep';
    const other = 'spiffe://cluster.local/ns/shop/sa/other';
    const elsewhere = 'spiffe://cluster.local/ns/elsewhere/sa/sleep';
    const allowSleep = compile('ALLOW', [{ any: true }], [{ filter_state: { key: 'io.istio.peer_principal', string_match: { exact: sleep } } }]);
    expect(judge([allowSleep], [conn('10.0.0.1', { principal: sleep }), conn('10.0.0.1', { principal: other }), conn('10.0.0.1')])).toEqual(['allow', 'deny', 'deny']);
    const allowShop = compile('ALLOW', [{ any: true }], [{ authenticated: { principal_name: { safe_regex: { regex: '.*/ns/shop/.*' } } } }]);
    expect(judge([allowShop], [conn('10.0.0.1', { principal: other }), conn('10.0.0.1', { principal: elsewhere })])).toEqual(['allow', 'deny']);
    const denyOther = compile('DENY', [{ any: true }], [{ authenticated: { principal_name: { exact: other } } }]);
    expect(judge([denyOther], [conn('10.0.0.1', { principal: other }), conn('10.0.0.1', { principal: sleep }), conn('10.0.0.1')])).toEqual(['deny', 'allow', 'allow']);
  });

  it('filters in order (istiod\'s DENY then ALLOW); LOG lets everything on', () => {
    const deny = compile('DENY', [{ any: true }], [{ source_ip: cidr('10.244.9.66', 32) }]);
    const allow = compile('ALLOW', [{ any: true }], [{ source_ip: cidr('10.244.9.0', 24) }]);
    expect(judge([deny, allow], [conn('10.244.9.3'), conn('10.244.9.66'), conn('10.1.0.1')])).toEqual(['allow', 'deny', 'deny']);
    expect(judge([compile('LOG', [{ any: true }])], [conn('10.1.0.1')])).toEqual(['allow']);
  });

  it('the server name: the SNI the front read; none for plaintext; unknown when the front did not look', () => {
    const allow = compile('ALLOW', [{ requested_server_name: { suffix: '.example.com' } }]);
    const tls = (sni?: string) => ({ transport: 'tls', alpn: [], ...(sni ? { sni } : {}) });
    expect(judge([allow], [
      conn('10.0.0.1', { seen: tls('db.example.com') }),
      conn('10.0.0.1', { seen: tls('db.example.net') }),
      conn('10.0.0.1', { seen: { transport: 'raw_buffer', alpn: [] } }),
      conn('10.0.0.1'),
    ])).toEqual(['allow', 'deny', 'deny', 'deny']);
    const deny = compile('DENY', [{ requested_server_name: { exact: 'admin.example.com' } }]);
    expect(judge([deny], [conn('10.0.0.1', { seen: tls('db.example.com') }), conn('10.0.0.1')])).toEqual(['allow', 'deny']);
  });
});
