// Envoy's HTTP semantics the translation reproduces beyond routing (issue "Istio fidelity"): path
// rewrites, retries, fault percentages and gRPC aborts, CORS and response headers, mirroring. The
// translation is checked on Istio-shaped resources decoded from protobuf bytes; the Lua it writes
// runs under the APISIX runtime's `resty` with the APISIX calls it makes standing in.
// test/dataplane/translation-semantics.test.ts runs the same rules on the real APISIX.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { fromCanonical } from '../../agent/xds/codec.js';
import { TYPE_URL } from '../../agent/xds/protos.js';
import type { RouteConfiguration } from '../../agent/xds/envoy-types.js';
import { translateRouteConfiguration } from '../../agent/translate/route-configuration.js';
import { validateApisix } from '../../agent/schema/validate.js';
import { belowRegex, sampleCondition } from '../../agent/translate/random-sample.js';
import { corsRules } from '../../agent/translate/cors.js';
import { luaLiteral } from '../../agent/translate/lua-literal.js';
import { upstreamId } from '../../agent/translate/ids.js';
import { translateRetryPolicy } from '../../agent/translate/retries.js';
import { responseHeaderOps } from '../../agent/translate/response-headers.js';
import { describeWhenAvailable } from '../support/requirements.js';
import { LOAD_FUNCTION_LUA, missingResty, runResty } from '../support/resty-lua.js';

const scope = { direction: 'outbound' as const, port: 9080 };

function translate(routes: object[], extra: { vhost?: object; config?: object } = {}) {
  const rc = fromCanonical<RouteConfiguration>(TYPE_URL.route, { name: '9080', ...extra.config, virtual_hosts: [{ name: 'vh', domains: ['svc'], ...extra.vhost, routes }] });
  const t = translateRouteConfiguration(rc, scope);
  for (const r of t.routes) expect(validateApisix('route', r.route), r.route.name).toBeNull();
  return t;
}

const only = (route: object, extra?: { vhost?: object; config?: object }) => translate([{ name: 'r', ...route }], extra).routes[0]!.route;
const proxyRewrite = (route: object) => only(route).plugins?.['proxy-rewrite'] as { regex_uri?: [string, string]; _meta?: { pre_function: string } } | undefined;

describe('path rewrites', () => {
  it('regex_rewrite becomes a global substitution in proxy-rewrite\'s pre_function, not a first-match regex_uri', () => {
    const conf = proxyRewrite({ match: { prefix: '/' }, route: { cluster: 'c', regex_rewrite: { pattern: { regex: '-' }, substitution: '_' } } });
    expect(conf?.regex_uri).toBeUndefined();
    expect(conf?._meta?.pre_function).toContain('ngx.re.gsub(ctx.var.uri, "-", "_", "jo")');
  });

  it('prefix_rewrite replaces what the route matched: a prefix (caseless when the match is), a separated prefix, a regex route\'s whole path', () => {
    const rewrite = (match: object) => proxyRewrite({ match, route: { cluster: 'c', prefix_rewrite: '/new' } })?.regex_uri;
    expect(rewrite({ prefix: '/old' })).toEqual(['^\\/old(.*)', '/new$1']);
    expect(rewrite({ prefix: '/Old', case_sensitive: false })).toEqual(['(?i)^\\/Old(.*)', '/new$1']);
    expect(rewrite({ path_separated_prefix: '/api' })).toEqual(['^\\/api(.*)', '/new$1']);
    expect(rewrite({ path: '/exact' })).toEqual(['^\\/exact\\z', '/new']);
    expect(rewrite({ safe_regex: { regex: '/items/[0-9]+' } })).toEqual(['^[\\s\\S]*', '/new']);
  });
});

describeWhenAvailable('path rewrites under OpenResty', missingResty(), () => {
  const gsub = (regex: string, substitution: string, uris: string[]) => {
    const lua = proxyRewrite({ match: { prefix: '/' }, route: { cluster: 'c', regex_rewrite: { pattern: { regex }, substitution } } })!._meta!.pre_function;
    const script = `${LOAD_FUNCTION_LUA}
package.loaded["apisix.core"] = { log = { error = function() end } }
local input = cjson.decode(assert(io.open(arg[1])):read("*a"))
local fn = load_function(input.lua)
for _, uri in ipairs(input.uris) do
  local ctx = { var = { uri = uri } }
  fn({}, ctx)
  print(cjson.encode({ uri = ctx.var.uri }))
end`;
    return runResty<{ uri: string }>(script, { lua, uris }).map((r) => r.uri);
  };

  it('every match is replaced, as RE2\'s GlobalReplace does; groups and anchors keep their meaning', () => {
    expect(gsub('-', '_', ['/a-b-c', '/none'])).toEqual(['/a_b_c', '/none']);
    expect(gsub('^/svc/([^/]+)/(.*)$', '/\\2/instance/\\1', ['/svc/x/a/b', '/other'])).toEqual(['/a/b/instance/x', '/other']);
    expect(gsub('([0-9]+)', '<\\1>', ['/v1/items/42'])).toEqual(['/v<1>/items/<42>']);
  });
});

const FAULT_TYPE = 'type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault';
const faultOf = (fault: object) => only({ match: { prefix: '/' }, route: { cluster: 'c' }, typed_per_filter_config: { 'envoy.filters.http.fault': { '@type': FAULT_TYPE, ...fault } } }).plugins?.['fault-injection'];
const hex = (n: number) => n.toString(16).padStart(32, '0').slice(-8);

describe('fault percentages and gRPC aborts', () => {
  it('a share below 1 % is sampled exactly on $request_id; whole percents stay APISIX\'s own percentage', () => {
    const conf = faultOf({
      abort: { http_status: 503, percentage: { numerator: 1000, denominator: 'MILLION' } }, // 0.1 %
      delay: { fixed_delay: '0.2s', percentage: { numerator: 25, denominator: 'TEN_THOUSAND' } }, // 0.25 %
    }) as { abort: { vars: [[[string, string, string]]] }; delay: { vars: [[[string, string, string]]] } };
    expect(conf.abort).not.toHaveProperty('percentage');
    const [abortVar, abortOp, abortRe] = conf.abort.vars[0][0];
    expect([abortVar, abortOp]).toEqual(['request_id', '~~']);
    const [, , delayRe] = conf.delay.vars[0][0];
    // the abort reads digits 1-8 of $request_id, the delay digits 9-16: independent draws
    expect(abortRe.startsWith('^(?:')).toBe(true);
    expect(delayRe.startsWith('^.{8}(?:')).toBe(true);
    expect(faultOf({ abort: { http_status: 503, percentage: { numerator: 500000, denominator: 'MILLION' } } })).toEqual({ abort: { http_status: 503, percentage: 50 } });
    expect(faultOf({ abort: { http_status: 503, percentage: { numerator: 7, denominator: 'HUNDRED' } } })).toEqual({ abort: { http_status: 503, percentage: 7 } });
  });

  it('the $request_id condition holds for exactly the share asked (every threshold, every value)', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 16 ** 8 }), fc.integer({ min: 0, max: 16 ** 8 - 1 }), (threshold, value) => {
      const re = new RegExp(`^${belowRegex(threshold)}`);
      expect(re.test(hex(value))).toBe(value < threshold);
    }));
    // the edges of each digit, where a wrong class would show
    for (const threshold of [1, 0x10, 0xa, 0xb, 0x1000, 0x0fffffff, 0x10000000, 0xfffffff0]) {
      for (const value of [threshold - 1, threshold, threshold + 1].filter((v) => v >= 0 && v < 16 ** 8)) {
        expect(new RegExp(`^${belowRegex(threshold)}`).test(hex(value)), `${threshold} ${value}`).toBe(value < threshold);
      }
    }
    const c = sampleCondition(0.001, 0)!;
    expect(c[0]).toBe('request_id');
    // 0.1 % of 16^8 = 4294967.296 → 4294967 values: the share is 0.1 % to within 10^-10
    expect(Math.abs(Math.round(0.001 * 16 ** 8) / 16 ** 8 - 0.001)).toBeLessThan(1e-9);
    expect(sampleCondition(1, 0)).toBeUndefined();
  });

  it('a gRPC abort answers as Envoy\'s local reply to gRPC: HTTP 200 with the status in grpc-status, no body', () => {
    expect(faultOf({ abort: { grpc_status: 14, percentage: { numerator: 100 } } })).toEqual({
      abort: { http_status: 200, headers: { 'content-type': 'application/grpc', 'grpc-status': '14', 'grpc-message': 'fault filter abort' }, percentage: 100 },
    });
  });
});

const CORS_TYPE = 'type.googleapis.com/envoy.config.route.v3.CorsPolicy';
const corsConfig = (policy: object) => ({ 'envoy.filters.http.cors': { '@type': CORS_TYPE, ...policy } });
const responsePhase = (route: object, extra?: { vhost?: object; config?: object }) => {
  const conf = only({ match: { prefix: '/' }, route: { cluster: 'c' }, ...route }, extra).plugins?.['request-id'] as { include_in_response: boolean; _meta: { priority: number; pre_function: string } } | undefined;
  return conf;
};

describe('CORS and response headers: the rules', () => {
  it('each CORS setting comes from the most specific policy that sets it (route, virtual host, route configuration)', () => {
    const rules = corsRules(
      fromCanonical<RouteConfiguration>(TYPE_URL.route, { name: 'x', virtual_hosts: [{ name: 'v', domains: ['*'], routes: [{ match: { prefix: '/' }, route: { cluster: 'c' }, typed_per_filter_config: corsConfig({ allow_methods: 'GET' }) }], typed_per_filter_config: corsConfig({ allow_origin_string_match: [{ exact: 'https://a.example' }, { suffix: '.b.example', ignore_case: true }], allow_methods: 'PUT', expose_headers: 'x-v' }) }], typed_per_filter_config: corsConfig({ max_age: '600', allow_credentials: true }) }).virtual_hosts![0]!.routes![0]!,
      fromCanonical<RouteConfiguration>(TYPE_URL.route, { name: 'x', virtual_hosts: [{ name: 'v', domains: ['*'], typed_per_filter_config: corsConfig({ allow_origin_string_match: [{ exact: 'https://a.example' }, { suffix: '.b.example', ignore_case: true }], allow_methods: 'PUT', expose_headers: 'x-v' }) }] }).virtual_hosts![0]!,
      fromCanonical<RouteConfiguration>(TYPE_URL.route, { name: 'x', typed_per_filter_config: corsConfig({ max_age: '600', allow_credentials: true }) }),
    );
    expect(rules).toEqual({
      origins: ['^https:\\/\\/a\\.example\\z', '(?i)\\.b\\.example\\z'],
      methods: 'GET', headers: '', expose: 'x-v', maxAge: '600', credentials: true, privateNetwork: false, forwardUnmatched: true,
    });
  });

  it('the older cors fields count only without a typed policy; a policy enabled for 0 % is no policy', () => {
    const legacy = responsePhase({ route: { cluster: 'c', cors: { allow_origin_string_match: [{ exact: 'https://old.example' }], allow_methods: 'GET' } } });
    expect(legacy?._meta.pre_function).toContain(luaLiteral('^https:\\/\\/old\\.example\\z'));
    expect(responsePhase({ typed_per_filter_config: corsConfig({ allow_origin_string_match: [{ exact: 'x' }], filter_enabled: { default_value: { numerator: 0 } } }) })).toBeUndefined();
    const quarter = corsRules(fromCanonical<RouteConfiguration>(TYPE_URL.route, { name: 'x', virtual_hosts: [{ name: 'v', domains: ['*'], routes: [{ match: { prefix: '/' }, route: { cluster: 'c' }, typed_per_filter_config: corsConfig({ allow_origin_string_match: [{ exact: 'x' }], filter_enabled: { default_value: { numerator: 25 } } }) }] }] }).virtual_hosts![0]!.routes![0]!, { name: 'v' }, { name: 'x' });
    expect(quarter?.enabledBelow).toBe(16 ** 8 / 4);
  });

  it('response header operations run in Envoy\'s order: each level removes then adds, the less specific level last', () => {
    const add = (key: string, value: string, append_action?: string, extra: object = {}) => ({ header: { key, value }, ...(append_action ? { append_action } : {}), ...extra });
    const levels = [
      { response_headers_to_add: [add('x-route', 'r', 'OVERWRITE_IF_EXISTS_OR_ADD'), add('X-List', 'a'), add('x-empty', ''), add('x-kept-empty', '', undefined, { keep_empty_value: true })], response_headers_to_remove: ['x-secret'] },
      { response_headers_to_add: [add('x-route', 'vhost', 'OVERWRITE_IF_EXISTS_OR_ADD'), add('x-default', 'd', 'ADD_IF_ABSENT'), add('x-only-if', 'o', 'OVERWRITE_IF_EXISTS')] },
      { response_headers_to_remove: ['x-list'] },
    ].map((l) => fromCanonical<RouteConfiguration>(TYPE_URL.route, { name: 'x', ...l }));
    expect(responseHeaderOps(levels)).toEqual([
      ['remove', 'x-secret'], ['set', 'x-route', 'r'], ['append', 'x-list', 'a'], ['append', 'x-kept-empty', ''],
      ['set', 'x-route', 'vhost'], ['absent', 'x-default', 'd'], ['present', 'x-only-if', 'o'],
      ['remove', 'x-list'],
    ]);
  });

  it('routes carry them on request-id, right after RBAC and before fault-injection', () => {
    const conf = responsePhase({ response_headers_to_add: [{ header: { key: 'x-a', value: 'b' } }] });
    expect(conf).toMatchObject({ include_in_response: false, _meta: { priority: 11250 } });
    expect(responsePhase({})).toBeUndefined();
  });
});

/** Runs the Lua of a route for one request: the request part, then (unless it answered) the response part. */
const RESPONSE_HARNESS = `${LOAD_FUNCTION_LUA}
local input = cjson.decode(assert(io.open(arg[1])):read("*a"))
local real = ngx
for _, case in ipairs(input.cases) do
  local fn = load_function(case.lua)
  local phase, exited = "access", nil
  local header = {}
  for k, v in pairs(case.upstream_headers or {}) do header[k] = v end
  local var = case.var
  var.request_id = var.request_id or "0123456789abcdef0123456789abcdef"
  ngx = setmetatable({
    var = var,
    header = setmetatable({}, {
      __index = function(_, k) return header[string.lower(k)] end,
      __newindex = function(_, k, v) header[string.lower(k)] = v end,
    }),
    get_phase = function() return phase end,
    exit = function(code) exited = code end,
    req = { get_method = function() return case.method or "GET" end },
  }, { __index = real })
  local ctx = {}
  fn({}, ctx)
  local request_headers = {}
  for k, v in pairs(header) do request_headers[k] = v end
  if not exited then
    header = {}
    for k, v in pairs(case.upstream_headers or {}) do header[k] = v end
    phase = "header_filter"
    fn({}, ctx)
  end
  ngx = real
  print(cjson.encode({ exited = exited or cjson.null, headers = exited and request_headers or header }))
end`;

describeWhenAvailable('CORS and response headers under OpenResty', missingResty(), () => {
  type Outcome = { exited: number | null; headers: Record<string, string | string[]> };
  const run = (lua: string, cases: Array<{ var: Record<string, string>; method?: string; upstream_headers?: Record<string, string | string[]> }>) =>
    runResty<Outcome>(RESPONSE_HARNESS, { cases: cases.map((c) => ({ ...c, lua })) });
  const policy = corsConfig({
    allow_origin_string_match: [{ exact: 'https://app.example' }, { safe_regex: { regex: 'https://[a-z]+\\.trusted\\.example' } }],
    allow_methods: 'GET,POST', allow_headers: '*', expose_headers: 'x-total', max_age: '600', allow_credentials: true,
  });
  const lua = responsePhase({ typed_per_filter_config: policy })!._meta.pre_function;
  const preflight = (origin: string) => ({ method: 'OPTIONS', var: { http_origin: origin, http_access_control_request_method: 'POST', http_access_control_request_headers: 'x-a, x-b' } });

  it('a preflight from an allowed origin is answered 200 with Envoy\'s headers; from another origin it goes on, untouched', () => {
    const [allowed, regex, other] = run(lua, [preflight('https://app.example'), preflight('https://shop.trusted.example'), preflight('https://evil.example')]);
    expect(allowed).toEqual({ exited: 200, headers: {
      'access-control-allow-origin': 'https://app.example', 'access-control-allow-credentials': 'true', 'access-control-allow-methods': 'GET,POST',
      'access-control-allow-headers': 'x-a, x-b', 'access-control-max-age': '600',
    } });
    expect(regex!.headers['access-control-allow-origin']).toBe('https://shop.trusted.example');
    expect(other).toEqual({ exited: null, headers: {} });
    // full matches: a longer origin that only starts like an allowed one is not allowed
    expect(run(lua, [preflight('https://app.example.evil')])[0]).toEqual({ exited: null, headers: {} });
  });

  it('an actual request from an allowed origin gets Allow-Origin, Allow-Credentials and Expose-Headers on its response, nothing else', () => {
    const [allowed, none, other, optionsWithoutMethod] = run(lua, [
      { var: { http_origin: 'https://app.example' }, upstream_headers: { 'access-control-allow-origin': '*' } },
      { var: {} },
      { var: { http_origin: 'https://evil.example' } },
      { method: 'OPTIONS', var: { http_origin: 'https://app.example' } },
    ]);
    expect(allowed).toEqual({ exited: null, headers: { 'access-control-allow-origin': 'https://app.example', 'access-control-allow-credentials': 'true', 'access-control-expose-headers': 'x-total' } });
    expect(none!.headers).toEqual({});
    expect(other!.headers).toEqual({});
    expect(optionsWithoutMethod!.exited).toBeNull(); // not a preflight: forwarded
  });

  it('an origin matcher that matches "*" allows every origin (Envoy); a policy enabled for a share applies to that share', () => {
    const any = responsePhase({ typed_per_filter_config: corsConfig({ allow_origin_string_match: [{ safe_regex: { regex: '.*' } }] }) })!._meta.pre_function;
    expect(run(any, [{ var: { http_origin: 'https://whoever.example' } }])[0]!.headers['access-control-allow-origin']).toBe('https://whoever.example');
    const half = responsePhase({ typed_per_filter_config: corsConfig({ allow_origin_string_match: [{ exact: 'o' }], filter_enabled: { default_value: { numerator: 50 } } }) })!._meta.pre_function;
    const [low, high] = run(half, [
      { var: { http_origin: 'o', request_id: '00000000000000007fffffff00000000' } },
      { var: { http_origin: 'o', request_id: '000000000000000080000000ffffffff' } },
    ]);
    expect([low!.headers['access-control-allow-origin'], high!.headers['access-control-allow-origin']]).toEqual(['o', undefined]);
  });

  it('response headers: append adds a line, set replaces, absent/present only when so, remove removes', () => {
    const headers = [
      { header: { key: 'x-append', value: 'two' } },
      { header: { key: 'x-set', value: 'new: with a colon/' }, append_action: 'OVERWRITE_IF_EXISTS_OR_ADD' },
      { header: { key: 'x-absent', value: 'default' }, append_action: 'ADD_IF_ABSENT' },
      { header: { key: 'x-absent-here', value: 'default' }, append_action: 'ADD_IF_ABSENT' },
      { header: { key: 'x-present', value: 'replaced' }, append_action: 'OVERWRITE_IF_EXISTS' },
      { header: { key: 'x-present-not', value: 'replaced' }, append_action: 'OVERWRITE_IF_EXISTS' },
      { header: { key: 'x-literal', value: '$upstream_addr ${remote_addr}' }, append_action: 'OVERWRITE_IF_EXISTS_OR_ADD' },
    ];
    const ops = responsePhase({ response_headers_to_add: headers, response_headers_to_remove: ['server-timing'] })!._meta.pre_function;
    const [out] = run(ops, [{ var: {}, upstream_headers: { 'x-append': 'one', 'x-set': 'old', 'x-absent': 'upstream', 'x-present': 'upstream', 'server-timing': 'db;dur=53' } }]);
    expect(out!.headers).toEqual({
      'x-append': ['one', 'two'], 'x-set': 'new: with a colon/', 'x-absent': 'upstream', 'x-absent-here': 'default', 'x-present': 'replaced',
      'x-literal': '$upstream_addr ${remote_addr}',
    });
  });
});

describe('mirroring', () => {
  it('each mirror policy keeps its cluster (subset included), its share and its Host suffix choice; proxy-mirror is not used', () => {
    const route = only({ match: { prefix: '/' }, route: { cluster: 'c', timeout: '2s', request_mirror_policies: [
      { cluster: 'outbound|80|v2|shadow.ns.svc.cluster.local', runtime_fraction: { default_value: { numerator: 25, denominator: 'TEN_THOUSAND' } } },
      { cluster: 'outbound|80||other.ns.svc.cluster.local', disable_shadow_host_suffix_append: true },
      { cluster: 'outbound|80||never', runtime_fraction: { default_value: { numerator: 0 } } },
    ] } });
    expect(Object.keys(route.plugins ?? {})).not.toContain('proxy-mirror');
    // the access-phase plugin sends them (test/agent/access-plugin.test.ts)
    expect(route.plugins?.['apisix-mesh-access']).toEqual({ mirror: {
      mirrors: [
        { upstream: upstreamId('outbound|80|v2|shadow.ns.svc.cluster.local'), cluster: 'outbound|80|v2|shadow.ns.svc.cluster.local', suffix: true, numerator: 25, denominator: 10000 },
        { upstream: upstreamId('outbound|80||other.ns.svc.cluster.local'), cluster: 'outbound|80||other.ns.svc.cluster.local', suffix: false, numerator: 1, denominator: 1 },
      ],
      timeout_ms: 2000, max_body: 8 * 1024 * 1024,
    } });
  });
});

describe('retry policies', () => {
  const notes: Array<[string, string]> = [];
  const note = (reason: string, detail: string) => notes.push([reason, detail]);
  const policy = (json: object) => fromCanonical<RouteConfiguration>(TYPE_URL.route, { name: 'x', virtual_hosts: [{ name: 'v', domains: ['*'], routes: [{ match: { prefix: '/' }, route: { cluster: 'c', retry_policy: json } }] }] }).virtual_hosts![0]!.routes![0]!.route!.retry_policy;
  const retry = (json: object) => {
    notes.length = 0;
    const t = translateRetryPolicy(policy(json), note);
    return { retries: t.retries, location: t.location?.name, conditions: t.conditions, perTry: t.perTry, notes: [...notes] };
  };

  it('Istio\'s default policy: connection failures and 503 answers, no timeouts, no resets', () => {
    expect(retry({ retry_on: 'connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes', num_retries: 2, retriable_status_codes: [503] })).toEqual({
      retries: 2, location: 'apisix_mesh_retry_503', conditions: { connect: true, reset: false, timeout: false }, perTry: undefined, notes: [],
    });
  });

  it('5xx and gateway-error: their statuses, resets, and the per-try timeout when there is one; what nginx cannot retry is noted', () => {
    expect(retry({ retry_on: '5xx', num_retries: 3, per_try_timeout: '0.5s' })).toEqual({
      retries: 3, location: 'apisix_mesh_retry_5xx', conditions: { connect: true, reset: true, timeout: true }, perTry: 0.5,
      notes: [['retry-status-codes', 'answers 501, 505-599 are not retried (nginx retries only on 500, 502, 503, 504 for this route)']],
    });
    expect(retry({ retry_on: 'gateway-error', num_retries: 1 })).toMatchObject({ location: 'apisix_mesh_retry_gateway', conditions: { connect: true, reset: true, timeout: false }, notes: [] });
    expect(retry({ retry_on: 'retriable-status-codes,connect-failure', retriable_status_codes: [429, 503] })).toMatchObject({
      retries: 1, location: 'apisix_mesh_retry_503', notes: [['retry-status-codes', 'answers 429 are not retried (nginx retries only on 503 for this route)']],
    });
  });

  it('no retries when there is nothing APISIX could retry on, or none asked for; unknown conditions are noted', () => {
    expect(retry({ retry_on: 'unavailable,cancelled', num_retries: 2 })).toMatchObject({ retries: 0, location: undefined });
    expect(retry({ retry_on: '5xx', num_retries: 0 })).toMatchObject({ retries: 0, location: undefined });
    expect(retry({ retry_on: 'connect-failure,bogus', num_retries: 1 }).notes).toEqual([['retry-condition', 'retry_on bogus is not known and not retried on']]);
  });

  it('the route hands the request to its retry location (the access-phase plugin does it last, after a mirror)', () => {
    const route = only({ match: { prefix: '/' }, route: { cluster: 'c', retry_policy: { retry_on: '5xx', num_retries: 2 }, request_mirror_policies: [{ cluster: 'm' }] } });
    expect(route.plugins?.['apisix-mesh-access']).toMatchObject({ mirror: { mirrors: [{ cluster: 'm' }] }, retry: { location: 'apisix_mesh_retry_5xx', connect: true, reset: true, timeout: false } });
    expect(only({ match: { prefix: '/' }, route: { cluster: 'c' } }).plugins?.['apisix-mesh-access']).toBeUndefined();
  });

});
