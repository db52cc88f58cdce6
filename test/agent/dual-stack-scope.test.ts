// HTTP routes of a listener bound to one service address serve its additional addresses too (a
// dual-stack Service's other-family ClusterIP, in Envoy's additional_addresses): istiod binds a
// sniffed port (no declared protocol) to the service address and routes it by RDS `<host>:<port>`.
import { describe, expect, it } from 'vitest';
import { fromCanonical } from '../../agent/xds/codec.js';
import { TYPE_URL } from '../../agent/xds/protos.js';
import type { Listener, RouteConfiguration } from '../../agent/xds/envoy-types.js';
import { scopeKey, translateListener } from '../../agent/translate/listener.js';
import { translateRouteConfiguration } from '../../agent/translate/route-configuration.js';
import { validateApisix } from '../../agent/schema/validate.js';
import { fqdn, httpRoute, outboundCluster, outboundSniffedListener, routeConfiguration, serviceVirtualHost } from '../support/istio-xds.js';

const HOST = fqdn('orders', 'shop');
const CLUSTER = outboundCluster(8081, HOST);

function routesOf(listenerJson: Record<string, unknown>) {
  const listener = translateListener(fromCanonical<Listener>(TYPE_URL.listener, listenerJson));
  expect(listener.rds.map((r) => r.routeConfigName)).toEqual([`${HOST}:8081`]);
  const scope = listener.rds[0]!.scope;
  const rc = fromCanonical<RouteConfiguration>(TYPE_URL.route, { ...routeConfiguration(8081, [serviceVirtualHost(HOST, 8081, '10.96.60.9', [httpRoute('default', { prefix: '/' }, { cluster: CLUSTER })])]), name: `${HOST}:8081` });
  return { scope, routes: translateRouteConfiguration(rc, scope).routes.map((r) => r.route) };
}

describe('a dual-stack service\'s listener: its routes match either address', () => {
  it('matches the original destination on the service address or the additional one (in the kernel\'s IPv6 text), and nothing else', () => {
    const { scope, routes } = routesOf(outboundSniffedListener('10.96.60.9', 8081, HOST, CLUSTER, ['FD00:96:0:0:0:0:60:9']));
    expect(scope).toEqual({ direction: 'outbound', port: 8081, address: '10.96.60.9', also: ['fd00:96::60:9'] });
    expect(routes.length).toBeGreaterThan(0);
    for (const r of routes) {
      expect(r.vars).toContainEqual(['connection_original_dst', 'in', ['10.96.60.9:8081', '[fd00:96::60:9]:8081']]);
      expect(validateApisix('route.strict', r)).toBeNull();
    }
  });

  it('keeps the one-address form (and the scope key, which names its routes) for a single-stack service', () => {
    const { scope, routes } = routesOf(outboundSniffedListener('10.96.60.9', 8081, HOST, CLUSTER));
    expect(scope).toEqual({ direction: 'outbound', port: 8081, address: '10.96.60.9' });
    expect(scopeKey(scope)).toBe('outbound:10.96.60.9:8081');
    for (const r of routes) expect(r.vars).toContainEqual(['connection_original_dst', '==', '10.96.60.9:8081']);
  });
});
