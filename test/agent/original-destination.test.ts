// Routes to Istio's PassthroughCluster / InboundPassthroughCluster carry the access-phase plugin's
// original_destination part, which points the request's upstream at its original destination.
// The plugin itself runs in test/agent/access-plugin.test.ts (resty) and on the real APISIX in
// test/dataplane/ (l4, translation-semantics).
import { describe, expect, it } from 'vitest';
import { validateApisix } from '../../agent/schema/validate.js';
import { ORIGINAL_DESTINATION_PLUGIN, originalDestinationConf, originalDestinationRoute } from '../../agent/translate/original-destination.js';
import { DEFAULT_CAPTURE_PORTS } from '../../agent/translate/route-configuration.js';

describe('the original-destination route', () => {
  const base = { id: 'r1', name: 'allow_any', uri: '/*', priority: 1, status: 1 as const, upstream_id: 'u1', vars: [['apisix_mesh_direction', '==', 'outbound'] as const] };

  it('drops the stored upstream and passes APISIX route schema with the plugin', () => {
    const route = originalDestinationRoute(base, { ports: DEFAULT_CAPTURE_PORTS, connectTimeout: 10 });
    expect(route.upstream_id).toBeUndefined();
    expect(route.plugins?.[ORIGINAL_DESTINATION_PLUGIN]).toEqual({ original_destination: { capture_ports: [15001, 15006], connect_timeout: 10, io_timeout: 300 } });
    expect(validateApisix('route.strict', route)).toBeNull();
    const empty = { ...route, plugins: { [ORIGINAL_DESTINATION_PLUGIN]: { original_destination: {} } } };
    expect(validateApisix('route.strict', empty)).not.toBeNull();
  });

  it('keeps the route\'s other access-phase work (the plugin runs the pass-through first)', () => {
    const route = originalDestinationRoute({ ...base, plugins: { [ORIGINAL_DESTINATION_PLUGIN]: { retry: { location: 'apisix_mesh_retry', connect: true, reset: false, timeout: false } } } }, { ports: DEFAULT_CAPTURE_PORTS, connectTimeout: 1 });
    expect(route.plugins?.[ORIGINAL_DESTINATION_PLUGIN]).toEqual({
      retry: { location: 'apisix_mesh_retry', connect: true, reset: false, timeout: false },
      original_destination: { capture_ports: [15001, 15006], connect_timeout: 1, io_timeout: 300 },
    });
  });

  it('follows configured capture ports and refuses a timeout that is not a positive number', () => {
    expect(originalDestinationConf({ ports: { outbound: 16001, inbound: 16006 }, connectTimeout: 1 }).capture_ports).toEqual([16001, 16006]);
    expect(() => originalDestinationConf({ ports: DEFAULT_CAPTURE_PORTS, connectTimeout: Number.NaN })).toThrow(RangeError);
  });
});
