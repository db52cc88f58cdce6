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
