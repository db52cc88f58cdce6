// The sidecar's policy plugin (apisix-mesh-policy, loaded by the real APISIX from the agent's Lua
// directory) under many routes: APISIX's serverless plugin, which carried the policy before, keeps
// compiled functions for 8 routes only, so with more busy routes it recompiled the policy on every
// request. Here 12 inbound ports each carry a DENY policy of their own: each route denies its own
// path and no other's, and the plugin compiles each route's policy once per worker (its info-level
// log line, with APISIX's log at info for this pod), however many requests each route serves.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import type { V1Pod } from '@kubernetes/client-node';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingForPod, podManifest } from '../support/pod/requirements.js';
import { startPod, type RunningPod } from '../support/pod/pod-harness.js';
import { POD_IP } from '../support/pod/network.js';
import { describeLines } from '../support/pod/apisix-log.js';
import { send } from '../support/echo-requests.js';
import {
  blackHoleCluster, fqdn, inboundCluster, inboundPassthroughCluster, MeshResources, passthroughCluster,
  rbacHttpFilter, virtualInbound, virtualOutbound, withHttpFilters,
} from '../support/istio-xds.js';
import { defaultInjectionConfig } from '../../webhook/config/injection-config.js';

const NS = 'test';
type Json = Record<string, unknown>;
const PORTS = Array.from({ length: 12 }, (_, i) => 8101 + i);
const ROUNDS = 4;
const CONFIG_ANNOTATION = 'apisix-mesh.io/apisix-config';

const denyOwnPath = (port: number) =>
  rbacHttpFilter('DENY', { [`ns[test]-policy[deny-${port}]-rule[0]`]: { permissions: [{ url_path: { path: { prefix: `/deny-${port}` } } }], principals: [{ any: true }] } });

function mesh(): MeshResources {
  const m = new MeshResources();
  m.cluster(passthroughCluster()).cluster(blackHoleCluster()).cluster(inboundPassthroughCluster());
  for (const port of PORTS) m.cluster(inboundCluster(port));
  let inbound = virtualInbound(PORTS.map((port) => ({ port, service: fqdn('app', NS) })));
  for (const port of PORTS) {
    inbound = withHttpFilters(inbound, [denyOwnPath(port)], (chain: Json) => (chain['filter_chain_match'] as Json | undefined)?.['destination_port'] === port);
  }
  return m.listener(inbound).listener(virtualOutbound());
}

/** APISIX of this pod logs at info: the plugin's compile line is at info. */
function infoLog(pod: V1Pod): V1Pod {
  const annotations = pod.metadata!.annotations!;
  const doc = parse(annotations[CONFIG_ANNOTATION]!) as { nginx_config: Json };
  doc.nginx_config['error_log_level'] = 'info';
  annotations[CONFIG_ANNOTATION] = stringify(doc);
  return pod;
}

describeWhenAvailable('the policy plugin: each of 12 routes enforces its own policy, compiled once', missingForPod(), () => {
  let pod: RunningPod;
  const call = (port: number, target: string) => send(pod.cluster, { url: `http://${POD_IP}:${port}/`, path: target });

  beforeAll(async () => {
    pod = await startPod({
      manifest: podManifest('app', NS, { app: 'app' }, [{ name: 'app', ports: PORTS }]),
      xds: mesh().resources,
      clusterAddresses: [],
      mutateInjected: infoLog,
    });
    await pod.kubelet.waitReady(20_000);
    expect(await pod.waitSynced()).toBe(true);
    await Promise.all(PORTS.map((port) => pod.app().serve(`app-${port}`, '0.0.0.0', port)));
  }, 90_000);
  afterAll(async () => {
    await pod?.stop();
  });

  it('every route denies its own path and lets the others\' through, round after round, compiling its policy once per worker', async () => {
    const other = (port: number) => PORTS[(PORTS.indexOf(port) + 1) % PORTS.length]!;
    for (let round = 0; round < ROUNDS; round++) {
      for (const port of PORTS) {
        expect(await call(port, `/deny-${port}/x`), `${port} round ${round}`).toMatchObject({ status: 403, body: 'RBAC: access denied' });
        const ok = await call(port, `/deny-${other(port)}`);
        expect(ok, `${port} round ${round}`).toMatchObject({ status: 200 });
        expect(ok.echo).toMatchObject({ name: `app-${port}`, url: `/deny-${other(port)}` });
      }
    }
    const log = pod.apisixLog();
    const compiles = new Map<string, number>();
    for (const m of log.matchAll(/apisix-mesh: policy compiled for route (\S+?),/g)) compiles.set(m[1]!, (compiles.get(m[1]!) ?? 0) + 1);
    // every route under policy compiled (at least once), and at most once per worker: not per request
    expect(compiles.size, 'routes whose policy was compiled').toBeGreaterThanOrEqual(PORTS.length);
    for (const [route, n] of compiles) expect(n, `compiles of route ${route}`).toBeLessThanOrEqual(pod.apisixWorkers);
    expect(pod.apisixErrors(), describeLines(pod.apisixErrors())).toEqual([]);
  });
});
