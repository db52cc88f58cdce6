// Issue 5's canary: a VirtualService sending requests whose `baggage` header matches
// `(^|,)\s*canary=true` to subset canary and the rest to stable (retries, 60 s timeout), and a
// DestinationRule with LEAST_REQUEST, connection limits and outlier detection. The xDS resources are
// in istiod's shapes (test/fixtures/xds/synthetic-canary-xds-responses.json); this checks that the
// APISIX objects do the same thing, rule by rule.
import { describe, expect, it } from 'vitest';
import { loadXds } from '../support/xds-fixtures.js';
import { translateMesh } from '../../agent/translate/snapshot.js';
import { upstreamId } from '../../agent/translate/ids.js';
import { validateApisix } from '../../agent/schema/validate.js';

const config = translateMesh(loadXds('synthetic-canary-xds-responses.json'));
const host = 'checkout.shop.svc.cluster.local';
const canary = config.upstreams.get(upstreamId(`outbound|8080|canary|${host}`))!;
const stable = config.upstreams.get(upstreamId(`outbound|8080|stable|${host}`))!;
/** the service's routes; the `allow_any` route to anything else is tested in translate-units */
const routes = [...config.routes.values()].filter((r) => r.upstream_id).sort((a, b) => b.priority - a.priority);

/**
 * The PCRE in a `~~` var, evaluated the way lua-resty-expr would (JS and PCRE agree on this one once
 * PCRE's end-of-text `\z` is written as JS's `$`, which without the m flag means the same).
 */
function matches(value: string, regex: string): boolean {
  return new RegExp(regex.replace(/\\z/g, '$')).test(value);
}

describe('canary (baggage header → subset canary)', () => {
  it('every object is valid for APISIX', () => {
    for (const u of config.upstreams.values()) expect(validateApisix('upstream.strict', u)).toBeNull();
    for (const r of config.routes.values()) expect(validateApisix('route.strict', r)).toBeNull();
  });

  it('the canary route comes first and sends matching baggage to the canary subset', () => {
    expect(routes).toHaveLength(2);
    const [first, second] = routes;
    expect(first!.upstream_id).toBe(canary.id);
    expect(second!.upstream_id).toBe(stable.id);
    expect(first!.priority).toBeGreaterThan(second!.priority);
    const baggage = first!.vars!.find((v) => v[0] === 'http_baggage')!;
    expect(baggage[1]).toBe('~~');
    const regex = String(baggage[2]);
    // Envoy's safe_regex is a full match; the APISIX regex must agree on these values
    expect(matches('canary=true', regex)).toBe(true);
    expect(matches(',  canary=true', regex)).toBe(true);
    expect(matches('canary=false', regex)).toBe(false);
    expect(matches('user=1,canary=true', regex)).toBe(false); // not a full match in Envoy either
    expect(second!.vars!.some((v) => v[0] === 'http_baggage')).toBe(false);
  });

  it('both routes serve only port 8080 of the outbound listener, for the service\'s hosts', () => {
    for (const r of routes) {
      expect(r.vars).toContainEqual(['apisix_mesh_direction', '==', 'outbound']);
      expect(r.vars).toContainEqual(['connection_original_dst', '~~', ':8080$']);
      expect(r.hosts).toContain(host);
      expect(r.hosts).toContain('checkout.shop');
    }
  });

  it('timeouts: 20 s per try, 60 s for all tries, 250 ms to connect', () => {
    for (const r of routes) expect(r.timeout).toEqual({ connect: 0.25, send: 20, read: 20 });
    for (const u of [canary, stable]) {
      expect(u.retries).toBe(3);
      expect(u.retry_timeout).toBe(60);
      expect(u.timeout?.connect).toBe(0.25);
    }
  });

  it('LEAST_REQUEST → least_conn; outlier detection → the sidecar\'s ejection policy: 5xx after 3 errors, 60 s, at most 50 %', () => {
    for (const u of [canary, stable]) {
      expect(u.type).toBe('least_conn');
      expect(u.checks).toBeUndefined();
      expect(u.labels?.['apisix-mesh-outlier']).toBe('c5=3,e5=100,cg=5,eg=0,base=60,max=300,int=5,pct=50,one=0,panic=0');
    }
  });

  it('connection limits → limit-conn: 100 in flight (the smaller of connections and requests), 50 queued, then 503', () => {
    for (const r of routes) {
      expect(r.plugins?.['limit-conn']).toMatchObject({ conn: 100, burst: 50, rejected_code: 503 });
    }
  });

  it('draining endpoints are left out', () => {
    expect(stable.nodes.map((n) => n.host).sort()).toEqual(['10.244.5.11', '10.244.5.12']);
    expect(canary.nodes.map((n) => n.host)).toEqual(['10.244.5.21']);
  });
});
