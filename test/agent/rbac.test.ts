// Envoy's RBAC semantics, construct by construct: each RBAC config goes through the wire form
// (canonical JSON → bytes → the agent's object form, as istiod's pushes do), the compiler, and the
// Lua function APISIX runs, which runs here under OpenResty's resty with real PCRE.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { LUA_SOURCE_DIR } from '../../agent/l4/lua-modules.js';
import { fromCanonical } from '../../agent/xds/codec.js';
import type { HttpRbac, Listener } from '../../agent/xds/envoy-types.js';
import { TYPE_URL } from '../../agent/xds/protos.js';
import { translateListener } from '../../agent/translate/listener.js';
import { compileRbacFilter, parseAddress, RbacCompileError, type CompiledRbacFilter } from '../../agent/policy/rbac.js';
import { rbacPluginConf, RBAC_PLUGIN } from '../../agent/policy/rbac-plugin.js';
import { luaLiteral } from '../../agent/translate/lua-literal.js';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingResty, runRbac, type RbacOutcome } from '../support/rbac-lua.js';

const RBAC_TYPE = 'type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC';
type Json = Record<string, unknown>;

function compile(config: Json, name = 'envoy.filters.http.rbac'): CompiledRbacFilter | null {
  return compileRbacFilter(name, fromCanonical<HttpRbac>(RBAC_TYPE, { '@type': RBAC_TYPE, ...config }));
}

/** One filter with one policy. */
function policy(action: string, permissions: Json[], principals: Json[] = [{ any: true }]): Json {
  return { rules: { action, policies: { p: { permissions, principals } } } };
}

const path = (m: Json) => ({ url_path: { path: m } });
const method = (m: string) => ({ header: { name: ':method', exact_match: m } });
const and = (...rules: Json[]) => ({ and_rules: { rules } });

interface Req {
  uri?: string;
  method?: string;
  raw?: string;
  args?: string;
  peer?: string;
  dst?: string;
  headers?: Record<string, string | string[]>;
  extraVar?: Record<string, string>;
}

function request(r: Req): { var: Record<string, string>; headers: Record<string, string | string[]> } {
  const uri = r.uri ?? '/';
  const v: Record<string, string> = {
    uri,
    request_method: r.method ?? 'GET',
    real_request_uri: r.raw ?? (r.args !== undefined ? `${uri}?${r.args}` : uri),
    remote_addr: r.peer ?? '10.244.1.5',
    connection_original_dst: r.dst ?? '10.244.2.9:80',
    scheme: 'http',
    http_host: 'httpbin',
    ...(r.args !== undefined ? { is_args: '?', args: r.args } : { is_args: '' }),
    ...r.extraVar,
  };
  return { var: v, headers: r.headers ?? {} };
}

/** The outcome of each request under the given filters (in order). */
function judge(filters: Array<CompiledRbacFilter | null>, reqs: Req[]): RbacOutcome[] {
  const conf = rbacPluginConf(filters.filter((f): f is CompiledRbacFilter => f !== null));
  return runRbac(reqs.map((r) => ({ conf, ...request(r) })));
}

/** 'allow' or 'deny' for each request. */
function verdicts(filters: Array<CompiledRbacFilter | null>, reqs: Req[]): string[] {
  return judge(filters, reqs).map((o) => {
    if (o.status === undefined) return 'allow';
    expect(o).toEqual({ status: 403, body: 'RBAC: access denied', content_type: 'text/plain' });
    return 'deny';
  });
}

describeWhenAvailable('RBAC under OpenResty (the Lua APISIX runs)', missingResty(), () => {
  it('DENY on a path prefix: the path denied, others through', () => {
    const deny = compile(policy('DENY', [path({ prefix: '/admin' })]));
    expect(verdicts([deny], [{ uri: '/admin' }, { uri: '/admin/x' }, { uri: '/public' }, { uri: '/adm' }])).toEqual(['deny', 'deny', 'allow', 'allow']);
  });

  it('ALLOW as Istio writes it (GET /info*, POST /data): anything else denied', () => {
    const allow = compile(policy('ALLOW', [
      and({ or_rules: { rules: [method('GET')] } }, { or_rules: { rules: [path({ prefix: '/info' })] } }),
      and({ or_rules: { rules: [method('POST')] } }, { or_rules: { rules: [path({ exact: '/data' })] } }),
    ]));
    expect(verdicts([allow], [
      { uri: '/info' }, { uri: '/info/x' }, { uri: '/data', method: 'POST' },
      { uri: '/x', method: 'DELETE' }, { uri: '/other' }, { uri: '/data' }, { uri: '/data/x', method: 'POST' },
    ])).toEqual(['allow', 'allow', 'allow', 'deny', 'deny', 'deny', 'deny']);
  });

  it('ALLOW without policies denies everything; LOG and a filter without rules let everything through', () => {
    expect(verdicts([compile({ rules: {} })], [{ uri: '/' }])).toEqual(['deny']);
    expect(verdicts([compile({ rules: { action: 'LOG', policies: { p: { permissions: [{ any: true }], principals: [{ any: true }] } } } })], [{ uri: '/' }])).toEqual(['allow']);
    expect(compile({ shadow_rules: { action: 'DENY', policies: { p: { permissions: [{ any: true }], principals: [{ any: true }] } } } })).toBeNull();
    expect(verdicts([compile({ rules: { action: 'DENY' } })], [{ uri: '/' }])).toEqual(['allow']);
  });

  it('filters in order: Istio\'s DENY then ALLOW', () => {
    const deny = compile(policy('DENY', [path({ prefix: '/admin' })]));
    const allow = compile(policy('ALLOW', [path({ prefix: '/a' })]));
    expect(verdicts([deny, allow], [{ uri: '/admin' }, { uri: '/app' }, { uri: '/b' }])).toEqual(['deny', 'allow', 'deny']);
  });

  it('and / or / not, empty and (true) and empty or (false), as Envoy', () => {
    const f = compile(policy('ALLOW', [{ not_rule: { or_rules: { rules: [path({ prefix: '/x' }), method('DELETE')] } } }]));
    expect(verdicts([f], [{ uri: '/a' }, { uri: '/x' }, { uri: '/a', method: 'DELETE' }])).toEqual(['allow', 'deny', 'deny']);
    expect(verdicts([compile(policy('ALLOW', [{ and_rules: { rules: [] } }]))], [{ uri: '/' }])).toEqual(['allow']);
    expect(verdicts([compile(policy('ALLOW', [{ or_rules: { rules: [] } }]))], [{ uri: '/' }])).toEqual(['deny']);
  });

  it('url_path: exact, prefix, suffix, contains, ignore_case, full-match regex; the query is not part of it', () => {
    const allowed = (m: Json, reqs: Req[]) => verdicts([compile(policy('ALLOW', [path(m)]))], reqs);
    expect(allowed({ exact: '/a' }, [{ uri: '/a', args: 'x=1' }, { uri: '/a/' }])).toEqual(['allow', 'deny']);
    expect(allowed({ suffix: '.json' }, [{ uri: '/x.json' }, { uri: '/x.jsonp' }])).toEqual(['allow', 'deny']);
    expect(allowed({ contains: 'min' }, [{ uri: '/admin' }, { uri: '/x' }])).toEqual(['allow', 'deny']);
    expect(allowed({ exact: '/Admin', ignore_case: true }, [{ uri: '/ADMIN' }, { uri: '/admin2' }])).toEqual(['allow', 'deny']);
    expect(allowed({ safe_regex: { regex: '/ad.*' } }, [{ uri: '/admin' }, { uri: '/xadmin' }])).toEqual(['allow', 'deny']);
    expect(allowed({ safe_regex: { regex: '/a' } }, [{ uri: '/a\n' }])).toEqual(['deny']); // RE2's `$`-less full match, not PCRE's
  });

  it('headers: values, presence, inversion, a missing header (Envoy\'s rules), repeated values joined with ","', () => {
    const allowed = (h: Json, reqs: Req[]) => verdicts([compile(policy('ALLOW', [{ header: { name: 'x-team', ...h } }]))], reqs);
    const team = (v?: string | string[]): Req => ({ headers: v === undefined ? {} : { 'x-team': v } });
    expect(allowed({ string_match: { exact: 'a' } }, [team('a'), team('b'), team()])).toEqual(['allow', 'deny', 'deny']);
    expect(allowed({ string_match: { exact: 'a' }, invert_match: true }, [team('a'), team('b'), team()])).toEqual(['deny', 'allow', 'deny']);
    expect(allowed({ string_match: { exact: 'a' }, invert_match: true, treat_missing_header_as_empty: true }, [team()])).toEqual(['allow']);
    expect(allowed({ present_match: true }, [team(''), team()])).toEqual(['allow', 'deny']);
    expect(allowed({ present_match: true, invert_match: true }, [team('x'), team()])).toEqual(['deny', 'allow']);
    expect(allowed({ string_match: { exact: 'a,b' } }, [team(['a', 'b'])])).toEqual(['allow']);
    expect(allowed({ string_match: { prefix: 'A', ignore_case: true } }, [team('abc'), team('xa')])).toEqual(['allow', 'deny']);
    expect(allowed({ safe_regex_match: { regex: 'v[0-9]+' } }, [team('v12'), team('v12x')])).toEqual(['allow', 'deny']);
  });

  it('pseudo-headers: :method, :authority, :path with its query', () => {
    const allowed = (h: Json, reqs: Req[]) => verdicts([compile(policy('ALLOW', [{ header: h }]))], reqs);
    expect(allowed({ name: ':authority', string_match: { exact: 'httpbin' } }, [{}, { extraVar: { http_host: 'other' } }])).toEqual(['allow', 'deny']);
    expect(allowed({ name: ':path', string_match: { exact: '/a?b=1' } }, [{ uri: '/a', args: 'b=1' }, { uri: '/a' }])).toEqual(['allow', 'deny']);
  });

  it('principals: peer CIDR (v4, v6), remote_ip only without a client-supplied X-Forwarded-For', () => {
    const from = (p: Json, reqs: Req[], action = 'ALLOW') => verdicts([compile(policy(action, [{ any: true }], [p]))], reqs);
    expect(from({ source_ip: { address_prefix: '10.244.1.0', prefix_len: 24 } }, [{ peer: '10.244.1.200' }, { peer: '10.244.2.1' }, { peer: 'fd00::1' }])).toEqual(['allow', 'deny', 'deny']);
    expect(from({ direct_remote_ip: { address_prefix: '10.244.1.129', prefix_len: 25 } }, [{ peer: '10.244.1.128' }, { peer: '10.244.1.127' }])).toEqual(['allow', 'deny']);
    expect(from({ direct_remote_ip: { address_prefix: 'fd00:1::', prefix_len: 33 } }, [{ peer: 'fd00:1:7fff::9' }, { peer: 'fd00:1:8000::9' }, { peer: '10.0.0.1' }])).toEqual(['allow', 'deny', 'deny']);
    expect(from({ direct_remote_ip: { address_prefix: '10.244.1.5' } }, [{ peer: '10.244.1.5' }, { peer: '10.244.1.6' }])).toEqual(['allow', 'deny']);
    const xff = { headers: { 'x-forwarded-for': '10.244.1.5' }, extraVar: { http_x_forwarded_for: '10.244.1.5' } };
    expect(from({ remote_ip: { address_prefix: '10.244.1.0', prefix_len: 24 } }, [{}, xff])).toEqual(['allow', 'deny']);
    expect(from({ remote_ip: { address_prefix: '10.9.0.0', prefix_len: 16 } }, [{}, xff], 'DENY')).toEqual(['allow', 'deny']);
    expect(from({ not_id: { direct_remote_ip: { address_prefix: '10.244.1.0', prefix_len: 24 } } }, [{ peer: '10.244.1.200' }, { peer: '10.0.0.1' }])).toEqual(['deny', 'allow']);
  });

  it('destination port, port range and address (the original destination)', () => {
    const to = (p: Json, reqs: Req[]) => verdicts([compile(policy('ALLOW', [p]))], reqs);
    expect(to({ destination_port: 80 }, [{ dst: '10.244.2.9:80' }, { dst: '10.244.2.9:8080' }, { dst: '' }])).toEqual(['allow', 'deny', 'deny']);
    expect(to({ destination_port_range: { start: 8000, end: 8080 } }, [{ dst: '10.0.0.1:8000' }, { dst: '10.0.0.1:8080' }])).toEqual(['allow', 'deny']);
    expect(to({ destination_ip: { address_prefix: '10.244.2.0', prefix_len: 24 } }, [{ dst: '10.244.2.9:80' }, { dst: '10.244.3.9:80' }, { dst: '[fd00::1]:80' }])).toEqual(['allow', 'deny', 'deny']);
  });

  it('principals of mTLS peers: the verified URI SAN ($apisix_mesh_peer_principal), as Istio\'s peer principal and Envoy\'s authenticated; none without mTLS', () => {
    const sleep = 'spiffe://cluster.local/ns/default/sa/sleep';
    const as = (principal: string): Req => ({ extraVar: { apisix_mesh_peer_principal: principal } });
    const peer = { filter_state: { key: 'io.istio.peer_principal', string_match: { exact: sleep } } };
    expect(verdicts([compile(policy('ALLOW', [{ any: true }], [peer]))], [as(sleep), as('spiffe://cluster.local/ns/default/sa/other'), as(''), {}])).toEqual(['allow', 'deny', 'deny', 'deny']);
    // Istio's source.namespace: a regex on the principal
    const namespace = { filter_state: { key: 'io.istio.peer_principal', string_match: { safe_regex: { regex: '.*/ns/test/.*' } } } };
    expect(verdicts([compile(policy('ALLOW', [{ any: true }], [namespace]))], [as('spiffe://cluster.local/ns/test/sa/a'), as(sleep)])).toEqual(['allow', 'deny']);
    expect(verdicts([compile(policy('ALLOW', [{ any: true }], [{ authenticated: { principal_name: { exact: sleep } } }]))], [as(sleep), as('x')])).toEqual(['allow', 'deny']);
    // authenticated without a name: any mTLS peer; a DENY on a peer denies it only
    expect(verdicts([compile(policy('ALLOW', [{ any: true }], [{ authenticated: {} }]))], [as(sleep), as('')])).toEqual(['allow', 'deny']);
    expect(verdicts([compile(policy('DENY', [path({ prefix: '/admin' })], [peer]))], [{ uri: '/admin', ...as(sleep) }, { uri: '/admin' }, { uri: '/other', ...as(sleep) }])).toEqual(['deny', 'allow', 'allow']);
    // another filter state stays unknown: an ALLOW on it does not allow
    expect(verdicts([compile(policy('ALLOW', [{ any: true }], [{ filter_state: { key: 'other.state', string_match: { exact: sleep } } }]))], [as(sleep)])).toEqual(['deny']);
  });

  it('what cannot be evaluated fails closed: an ALLOW does not allow, a DENY denies — unless the rest decides', () => {
    const peer = { filter_state: { key: 'io.istio.peer_principal', string_match: { exact: 'spiffe://cluster.local/ns/default/sa/sleep' } } };
    expect(verdicts([compile(policy('ALLOW', [{ requested_server_name: { exact: 'x' } }]))], [{}])).toEqual(['deny']);
    expect(verdicts([compile(policy('DENY', [{ any: true }], [{ metadata: { filter: 'istio_authn', path: [{ key: 'request.auth.claims' }], value: { string_match: { exact: 'x' } } } }]))], [{}])).toEqual(['deny']);
    // an OR with a branch that is true for sure is true
    expect(verdicts([compile(policy('ALLOW', [{ any: true }], [{ or_ids: { ids: [peer, { any: true }] } }]))], [{}])).toEqual(['allow']);
    // a regex PCRE cannot mean as RE2 does (non-ASCII), a percent-escaped path pattern, a path with a backslash
    expect(verdicts([compile(policy('DENY', [path({ safe_regex: { regex: '/é+' } })]))], [{ uri: '/x' }])).toEqual(['deny']);
    expect(verdicts([compile(policy('DENY', [path({ exact: '/a%20b' })]))], [{ uri: '/a b' }])).toEqual(['deny']);
    expect(verdicts([compile(policy('DENY', [path({ prefix: '/admin' })]))], [{ uri: '/x\\..\\admin' }])).toEqual(['deny']);
  });

  it('the upstream gets the normalised path the policy judged, with the raw query', () => {
    const allow = compile(policy('ALLOW', [{ any: true }]));
    const out = judge([allow], [{ uri: '/admin', raw: '/public/../admin?q=1', args: 'q=1' }, { uri: '/admin', raw: '//admin' }, { uri: '/a', raw: '/a' }]);
    expect(out.map((o) => o.upstream_uri)).toEqual(['ENC(/admin)?q=1', 'ENC(/admin)', undefined]);
  });

  it('hostile values stay data: quotes, brackets, newlines and NUL in a matched value', () => {
    const nasty = '"]] os.exit(3) --[[\\\n\0\'é';
    const f = compile(policy('ALLOW', [{ header: { name: 'x-v', string_match: { exact: nasty } } }]));
    expect(verdicts([f], [{ headers: { 'x-v': nasty } }, { headers: { 'x-v': 'x' } }])).toEqual(['allow', 'deny']);
  });
});

describe('RBAC compilation', () => {
  it('refuses what it cannot compile: the matcher form, unbounded nesting, an unknown action', () => {
    expect(() => compile({ matcher: { matcher_list: { matchers: [] } } })).toThrow(RbacCompileError);
    let rule: Json = { any: true };
    for (let i = 0; i < 40; i++) rule = { not_rule: rule };
    expect(() => compile(policy('ALLOW', [rule]))).toThrow(/deeper/);
  });

  it('writes the policy as data for the sidecar\'s plugin, which runs in the rewrite phase above fault-injection (11000)', () => {
    const conf = rbacPluginConf([compile(policy('DENY', [path({ prefix: '/admin' })]))!]);
    expect(RBAC_PLUGIN).toBe('apisix-mesh-policy');
    expect(conf).toEqual({ rbac: [{ name: 'envoy.filters.http.rbac', action: 'DENY', policies: [{ name: 'p', match: { t: 'and', n: [{ t: 'path', m: { k: 'prefix', v: '/admin' } }, { t: 'any' }] } }] }] });
    const lua = readFileSync(join(LUA_SOURCE_DIR, 'apisix/plugins/apisix-mesh-policy.lua'), 'utf8');
    expect(lua).toMatch(/priority = 11500,/);
    expect(lua).toMatch(/function _M\.rewrite\(conf, ctx\)/);
    expect(luaLiteral({ and: [1, 'a"\\'], not: true })).toBe('{["and"]={1,"a\\034\\092"},["not"]=true}');
  });

  it('parses addresses as the evaluator does', () => {
    expect(parseAddress('10.0.0.1')).toEqual([10, 0, 0, 1]);
    expect(parseAddress('::1')).toEqual([...Array(15).fill(0), 1]);
    expect(parseAddress('1::2::3')).toBeUndefined();
    expect(parseAddress('::ffff:1.2.3.4')).toBeUndefined();
    expect(parseAddress('256.0.0.1')).toBeUndefined();
  });
});

describe('RBAC per scope (listener translation)', () => {
  const HCM = 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';
  const chain = (transport: string, rbac: Json[]) => ({
    filter_chain_match: { destination_port: 80, transport_protocol: transport },
    filters: [{ name: 'hcm', typed_config: { '@type': HCM, stat_prefix: 's', rds: { route_config_name: '80' }, http_filters: [...rbac, { name: 'router', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router' } }] } }],
  });
  const rbac = (action: string, prefix: string) => ({ name: `rbac-${action}`, typed_config: { '@type': RBAC_TYPE, rules: { action, policies: { p: { permissions: [path({ prefix })], principals: [{ any: true }] } } } } });
  const listener = (chains: Json[]) => translateListener(fromCanonical<Listener>(TYPE_URL.listener, { name: 'virtualInbound', address: { socket_address: { address: '0.0.0.0', port_value: 15006 } }, traffic_direction: 'INBOUND', filter_chains: chains }));

  it('chains APISIX cannot tell apart (TLS and plaintext of one port) chain their filters; identical ones once', () => {
    const same = listener([chain('tls', [rbac('DENY', '/admin')]), chain('raw_buffer', [rbac('DENY', '/admin')])]);
    expect(same.rds.map((r) => r.policy?.rbac.map((f) => f.name))).toEqual([['rbac-DENY']]);
    const different = listener([chain('tls', [rbac('DENY', '/admin')]), chain('raw_buffer', [rbac('ALLOW', '/public')])]);
    expect(different.rds.map((r) => r.policy?.rbac.map((f) => f.action))).toEqual([['DENY', 'ALLOW']]);
    expect(listener([chain('raw_buffer', [])]).rds[0]?.policy).toBeUndefined();
  });
});
