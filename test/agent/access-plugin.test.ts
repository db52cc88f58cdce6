// The sidecar's access-phase plugin, apisix-mesh-access (agent/l4/lua/apisix/plugins/): what a
// route does at the end of APISIX's access phase — forward to the original destination, mirror,
// hand over to a retry location — carried as data the plugin's schema checks, where it was Lua code
// for APISIX's serverless-pre-function (compiled again on every request past 8 busy routes). The
// plugin runs under the APISIX runtime's `resty` (test/support/access-plugin-lua.ts);
// test/dataplane/translation-semantics.test.ts runs it in the real APISIX.
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { fromCanonical } from '../../agent/xds/codec.js';
import { TYPE_URL } from '../../agent/xds/protos.js';
import type { RouteConfiguration } from '../../agent/xds/envoy-types.js';
import { translateRouteConfiguration, DEFAULT_CAPTURE_PORTS } from '../../agent/translate/route-configuration.js';
import { ACCESS_PHASE_PLUGIN } from '../../agent/translate/access-phase.js';
import { originalDestinationRoute } from '../../agent/translate/original-destination.js';
import { RETRY_LOCATIONS } from '../../agent/translate/retries.js';
import { upstreamId } from '../../agent/translate/ids.js';
import { validateApisix } from '../../agent/schema/validate.js';
import { APISIX_PLUGINS } from '../../webhook/injection/apisix-config.js';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingResty } from '../support/resty-lua.js';
import { accessPluginSchema, runAccessPlugin } from '../support/access-plugin-lua.js';

const schemaFile = fileURLToPath(new URL('../../agent/schema/apisix/plugins/apisix-mesh-access.schema.json', import.meta.url));

function routeOf(route: object) {
  const rc = fromCanonical<RouteConfiguration>(TYPE_URL.route, { name: '9080', virtual_hosts: [{ name: 'vh', domains: ['svc'], routes: [{ name: 'r', match: { prefix: '/' }, ...route }] }] });
  const r = translateRouteConfiguration(rc, { direction: 'outbound', port: 9080 }).routes[0]!.route;
  expect(validateApisix('route.strict', r)).toBeNull();
  return r;
}

const mirrored = { cluster: 'c', timeout: '2s', retry_policy: { retry_on: '5xx', num_retries: 2 }, request_mirror_policies: [{ cluster: 'outbound|80||m.ns.svc.cluster.local' }] };
const passthroughOf = (route: ReturnType<typeof routeOf>) => originalDestinationRoute(route, { ports: DEFAULT_CAPTURE_PORTS, connectTimeout: 0.25 });

describe('the access-phase plugin configuration', () => {
  it('is data: the mirror, the retry hand-over and the original destination, enabled in the sidecar; no serverless function', () => {
    const route = passthroughOf(routeOf({ route: mirrored }));
    expect(Object.keys(route.plugins ?? {})).toEqual([ACCESS_PHASE_PLUGIN]);
    expect(route.plugins?.[ACCESS_PHASE_PLUGIN]).toEqual({
      mirror: { mirrors: [{ upstream: upstreamId('outbound|80||m.ns.svc.cluster.local'), cluster: 'outbound|80||m.ns.svc.cluster.local', suffix: true, numerator: 1, denominator: 1 }], timeout_ms: 2000, max_body: 8 * 1024 * 1024 },
      retry: { location: 'apisix_mesh_retry_5xx', connect: true, reset: true, timeout: false },
      original_destination: { capture_ports: [15001, 15006], connect_timeout: 0.25, io_timeout: 300 },
    });
    expect(validateApisix('route.strict', route)).toBeNull();
    expect(APISIX_PLUGINS).toContain(ACCESS_PHASE_PLUGIN);
    expect(APISIX_PLUGINS.filter((p) => p.startsWith('serverless-'))).toEqual([]);
    expect(routeOf({ route: { cluster: 'c' } }).plugins?.[ACCESS_PHASE_PLUGIN]).toBeUndefined();
  });

  it('the agent refuses what the plugin would refuse: its schema is the one the agent checks', () => {
    const base = passthroughOf(routeOf({ route: mirrored }));
    const conf = base.plugins![ACCESS_PHASE_PLUGIN]! as Record<string, Record<string, unknown>>;
    const bad = [
      {},
      { ...conf, retry: { ...conf['retry'], location: 'somewhere_else' } },
      { ...conf, original_destination: { ...conf['original_destination'], capture_ports: [15001] } },
      { ...conf, mirror: { ...conf['mirror'], mirrors: [] } },
      { ...conf, code: 'return function() end' },
    ];
    for (const c of bad) expect(validateApisix('route.strict', { ...base, plugins: { [ACCESS_PHASE_PLUGIN]: c } }), JSON.stringify(c).slice(0, 80)).not.toBeNull();
    const locations = (JSON.parse(readFileSync(schemaFile, 'utf8')) as { properties: { retry: { properties: { location: { enum: string[] } } } } }).properties.retry.properties.location.enum;
    expect(locations).toEqual(RETRY_LOCATIONS.map((l) => l.name));
  });
});

describeWhenAvailable('the access-phase plugin under the APISIX runtime', missingResty(), () => {
  it('its schema is the agent\'s (agent/schema/apisix/plugins/apisix-mesh-access.schema.json)', () => {
    const { $schema: _s, $id: _i, title: _t, $comment: _c, properties, ...json } = JSON.parse(readFileSync(schemaFile, 'utf8')) as Record<string, unknown> & { properties: Record<string, unknown> };
    const { _meta: _m, ...own } = properties;
    expect(accessPluginSchema()).toEqual({ ...json, properties: own });
  });

  it('accepts what the agent writes and refuses what the agent refuses', () => {
    const conf = passthroughOf(routeOf({ route: mirrored })).plugins![ACCESS_PHASE_PLUGIN]!;
    const [ok, empty, unknown, badLocation] = runAccessPlugin([
      { conf: { retry: (conf as Record<string, unknown>)['retry'] }, var: {} },
      { conf: {} },
      { conf: { ...conf, functions: ['return function() end'] } },
      { conf: { retry: { location: 'apisix_mesh_retry_5xx; x', connect: true, reset: true, timeout: true } } },
    ]);
    expect(ok!.refused).toBeUndefined();
    for (const o of [empty, unknown, badLocation]) expect(o!.refused).toBeTruthy();
  });

  describe('original destination', () => {
    const conf = { original_destination: { capture_ports: [15001, 15006], connect_timeout: 0.25, io_timeout: 300 } };
    const run = (dst?: string) => runAccessPlugin([{ conf, var: dst === undefined ? {} : { connection_original_dst: dst } }])[0]!;

    it('sets one node at the IPv4 destination, keeping the Host header, for this request only', () => {
      const out = run('10.96.3.7:8080');
      expect(out.steps).toEqual(['passthrough']);
      expect(out.set).toEqual({
        key: 'passthrough#10.96.3.7:8080', version: 7, parent_is_route: true,
        conf: { type: 'roundrobin', scheme: 'http', pass_host: 'pass', nodes: [{ host: '10.96.3.7', port: 8080, weight: 1, priority: 0 }], timeout: { connect: 0.25, send: 300, read: 300 } },
      });
    });

    it('takes IPv6 destinations with or without brackets', () => {
      expect(run('[fd00:77::1]:80').set).toMatchObject({ key: 'passthrough#[fd00:77::1]:80', conf: { nodes: [{ host: 'fd00:77::1', port: 80 }] } });
      expect(run('fd00:77::1:80').set).toMatchObject({ conf: { nodes: [{ host: 'fd00:77::1', port: 80 }] } });
    });

    it('answers 502 without an original destination, and for the capture ports (a loop into APISIX), with a warning', () => {
      for (const dst of [undefined, 'not-an-address', '10.96.3.7:15001', '10.96.3.7:15006']) {
        const out = run(dst);
        expect(out.steps, String(dst)).toEqual(['exit 502']);
        expect(out.logs).toEqual([`warn: apisix-mesh: no original destination to pass through to: ${dst ?? ''}`]);
      }
    });
  });

  describe('mirror and retry hand-over', () => {
    const m = (cluster: string, extra: object = {}) => ({ upstream: upstreamId(cluster), cluster, suffix: true, numerator: 1, denominator: 1, ...extra });
    const upstreams = {
      [upstreamId('a')]: { nodes: [{ host: '10.0.0.1', port: 8080, weight: 1, priority: 0 }, { host: '10.0.0.9', port: 8080, weight: 5, priority: -1 }] },
      [upstreamId('b')]: { nodes: [{ host: 'fd00::2', port: 80, weight: 1 }] },
    };
    const request = { var: { upstream_host: 'svc:9080', upstream_uri: '/x?y=1', apisix_mesh_request_id: 'rid-1', http_host: 'svc:9080' }, headers: { 'x-a': '1', connection: 'keep-alive', host: 'svc:9080' }, method: 'POST', body: 'hello', upstreams };

    it('copies the request to each mirror cluster\'s preferred endpoint, Host with -shadow unless disabled, then hands over last', () => {
      const conf = {
        original_destination: { capture_ports: [15001, 15006], connect_timeout: 1, io_timeout: 300 },
        mirror: { mirrors: [m('a'), m('b', { suffix: false }), m('none'), m('never', { numerator: 1, denominator: 1000000 })], timeout_ms: 2000, max_body: 1024 },
        retry: { location: 'apisix_mesh_retry_503', connect: true, reset: false, timeout: false },
      };
      const [out] = runAccessPlugin([{ conf, ...request, var: { ...request.var, connection_original_dst: '10.1.1.1:80' } }]);
      expect(out!.steps).toEqual(['passthrough', 'mirror http://10.0.0.1:8080/x?y=1', 'mirror http://[fd00::2]:80/x?y=1', 'exec @apisix_mesh_retry_503']);
      expect(out!.mirrors).toEqual([
        { url: 'http://10.0.0.1:8080/x?y=1', method: 'POST', headers: { 'x-a': '1', 'x-request-id': 'rid-1', Host: 'svc-shadow:9080' }, body: 'hello', timeout: 2000 },
        { url: 'http://[fd00::2]:80/x?y=1', method: 'POST', headers: { 'x-a': '1', 'x-request-id': 'rid-1', Host: 'svc:9080' }, body: 'hello', timeout: 2000 },
      ]);
      expect(out!.retry).toEqual({ flags: { connect: true, reset: false, timeout: false }, ctx_ref: 'stashed-ctx' });
      expect(out!.logs).toEqual([`info: apisix-mesh: mirror cluster none has no upstream or no node`]);
    });
  });
});
