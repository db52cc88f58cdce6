// Golden translation tests: every xDS fixture (real istiod output and the synthetic ones) → the
// APISIX objects the agent would store, compared with test/agent/golden/*.json. Every object is
// also checked against APISIX's own schemas. Refresh with UPDATE_GOLDEN=1 and review the diff.
import { describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { loadCanonical, decodeAll } from '../support/xds-fixtures.js';
import { expectGolden } from '../support/golden.js';
import { translateMesh, type ApisixConfig } from '../../agent/translate/snapshot.js';
import { translateClusterLoadAssignment } from '../../agent/translate/endpoints.js';
import { translateListener } from '../../agent/translate/listener.js';
import { translateCluster } from '../../agent/translate/cluster.js';
import { validateApisix } from '../../agent/schema/validate.js';

const golden = (name: string) => fileURLToPath(new URL(`./golden/${name}`, import.meta.url));

function summary(config: ApisixConfig) {
  const byReason: Record<string, number> = {};
  for (const n of config.notes) byReason[n.reason] = (byReason[n.reason] ?? 0) + 1;
  return {
    upstreams: [...config.upstreams.values()].sort((a, b) => a.name.localeCompare(b.name)),
    routes: [...config.routes.values()].sort((a, b) => a.name.localeCompare(b.name) || b.priority - a.priority),
    notesByReason: Object.fromEntries(Object.entries(byReason).sort()),
  };
}

function expectSchemaValid(config: ApisixConfig): void {
  for (const u of config.upstreams.values()) expect(validateApisix('upstream.strict', u), u.name).toBeNull();
  for (const r of config.routes.values()) expect(validateApisix('route.strict', r), r.name).toBeNull();
}

/**
 * No route carries Lua code for APISIX's serverless plugins, whose cache of compiled functions
 * holds 8 routes (every request on a ninth busy route compiled its code again): what a route does in
 * the access phase is data for the sidecar's own plugin (agent/translate/access-phase.ts).
 */
function expectNoServerless(config: ApisixConfig): void {
  const serverless = [...config.routes.values()].filter((r) => Object.keys(r.plugins ?? {}).some((p) => p.startsWith('serverless-')));
  expect(serverless.map((r) => r.name)).toEqual([]);
}

const FULL = [
  'deathstarbench-geo-istio1.18-configdump.json',
  'slime-scout-productpage-configdump.json',
  'synthetic-reviews-xds-responses.json',
  'synthetic-canary-xds-responses.json',
];

describe('whole-sidecar fixtures → APISIX', () => {
  for (const file of FULL) {
    it(`${file}: matches the golden file and every object passes APISIX's schema`, () => {
      const config = translateMesh(decodeAll(loadCanonical(file)));
      expect(config.upstreams.size + config.routes.size).toBeGreaterThan(0);
      expectSchemaValid(config);
      expectNoServerless(config);
      expectGolden(golden(file.replace(/\.(json|yaml)$/, '.apisix.json')), summary(config));
    });
  }

  it('the 1.18 dump yields an upstream for every EDS cluster that has an assignment', () => {
    const xds = decodeAll(loadCanonical('deathstarbench-geo-istio1.18-configdump.json'));
    const config = translateMesh(xds);
    const eds = [...xds.clusters.values()].filter((c) => c.type === 'EDS' && xds.endpoints.has(c.name!));
    for (const c of eds) expect([...config.upstreams.values()].some((u) => u.name === c.name), c.name).toBe(true);
  });
});

describe('single-type fixtures', () => {
  it('istio-sidecar-endpoints-configdump.json: every ClusterLoadAssignment → nodes (golden)', () => {
    const xds = decodeAll(loadCanonical('istio-sidecar-endpoints-configdump.json'));
    const out = Object.fromEntries([...xds.endpoints].map(([name, cla]) => [name, translateClusterLoadAssignment(cla).nodes]));
    expect(out['outbound|9080||reviews.default.svc.cluster.local']).toHaveLength(3);
    for (const [name, nodes] of Object.entries(out)) {
      const upstream = { id: 'x', name, type: 'roundrobin', nodes };
      expect(validateApisix('upstream.strict', upstream), name).toBeNull();
    }
    expectGolden(golden('istio-sidecar-endpoints.nodes.json'), out);
  });

  it('istio-sidecar-listeners-configdump.yaml: which route configs serve which port (golden)', () => {
    const xds = decodeAll(loadCanonical('istio-sidecar-listeners-configdump.yaml'));
    const out = Object.fromEntries(
      [...xds.listeners].map(([name, l]) => {
        const t = translateListener(l);
        return [name, { rds: t.rds, inline: t.inline.map((i) => ({ name: i.routeConfig.name, scope: i.scope, vhosts: i.routeConfig.virtual_hosts?.length })), refused: t.refused }];
      }),
    );
    expect(out['0.0.0.0_9080']?.rds).toEqual([{ routeConfigName: '9080', scope: { direction: 'outbound', port: 9080 } }]);
    // every inbound chain carries ext_authz (a CUSTOM policy), which the agent does not enforce: all
    // refused (their RBAC filters alone would be enforced)
    expect(out['virtualInbound']?.inline).toEqual([]);
    expect(out['virtualInbound']?.refused.map((r) => r.scope.port)).toEqual([0, 80]);
    expectGolden(golden('istio-sidecar-listeners.scopes.json'), out);
  });

  it('slime dump: every cluster translates to a schema-valid upstream shape', () => {
    const xds = decodeAll(loadCanonical('slime-scout-productpage-configdump.json'));
    let checked = 0;
    for (const cluster of xds.clusters.values()) {
      const t = translateCluster(cluster);
      if (!t.upstream) continue;
      expect(validateApisix('upstream.strict', { ...t.upstream, nodes: [] }), cluster.name).toBeNull();
      checked++;
    }
    expect(checked).toBeGreaterThan(20);
  });

  it('the apisix-mesh-agent file-provisioner fixtures (camelCase JSON) decode and translate', () => {
    const xds = decodeAll({ ...loadCanonical('apisix-mesh-agent-file-cluster.json'), route: loadCanonical('apisix-mesh-agent-file-route.json').route });
    const cluster = [...xds.clusters.values()][0]!;
    expect(translateCluster(cluster).upstream?.name).toBe(cluster.name);
    const rc = [...xds.routeConfigs.values()][0]!;
    expect(rc.virtual_hosts?.[0]?.routes?.[0]?.match?.path).toBe('/foo');
  });
});
