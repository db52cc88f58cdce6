// Envoy's HTTP semantics the translation reproduces beyond routing (issue "Istio fidelity"): path
// rewrites, retries, fault percentages and gRPC aborts, CORS and response headers, mirroring. The
// translation is checked on Istio-shaped resources decoded from protobuf bytes; the Lua it writes
// runs under the APISIX runtime's `resty` with the APISIX calls it makes standing in.
// test/dataplane/translation-semantics.test.ts runs the same rules on the real APISIX.
import { describe, expect, it } from 'vitest';
import { fromCanonical } from '../../agent/xds/codec.js';
import { TYPE_URL } from '../../agent/xds/protos.js';
import type { RouteConfiguration } from '../../agent/xds/envoy-types.js';
import { translateRouteConfiguration } from '../../agent/translate/route-configuration.js';
import { validateApisix } from '../../agent/schema/validate.js';
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
