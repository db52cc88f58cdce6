// A TCP chain whose cluster's upstream APISIX's schema refuses (here an endpoint on port 0, which
// istiod's EDS may carry and APISIX's node schema does not allow) on the real APISIX: the agent
// leaves the upstream out, and the chain that names it is refused with a note — its connections
// closed at once, reaching nobody — rather than left pointing at an upstream APISIX does not hold
// (with a stream-side copy APISIX's stream workers refuse with an [error] line). A healthy TCP
// service beside it still works. APISIX's error log in every test.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingForPod, podManifest } from '../support/pod/requirements.js';
import { PLAINTEXT_ISTIOD_CONFIG, startPod, type RunningPod } from '../support/pod/pod-harness.js';
import { POD_IP } from '../support/pod/network.js';
import { describeLines } from '../support/pod/apisix-log.js';
import type { TcpResult } from '../support/pod/worker-client.js';
import { blackHoleCluster, edsCluster, fqdn, MeshResources, outboundCluster, outboundTcpListener, passthroughCluster, virtualOutbound } from '../support/istio-xds.js';

const NS = 'data';
/** a TCP service whose one endpoint is on port 0: its upstream is refused by APISIX's schema */
const BROKEN = { vip: '10.96.70.10', port: 9100, host: fqdn('broken', NS), endpoint: '10.244.9.9' };
const BROKEN_CLUSTER = outboundCluster(BROKEN.port, BROKEN.host);
const DB = { vip: '10.96.50.10', port: 9000, host: fqdn('db', NS), endpoint: '10.244.7.11' };
const DB_CLUSTER = outboundCluster(DB.port, DB.host);

function mesh(): MeshResources {
  const m = new MeshResources();
  m.cluster(passthroughCluster()).cluster(blackHoleCluster());
  m.cluster(edsCluster(BROKEN_CLUSTER), [{ ip: BROKEN.endpoint, port: 0 }]);
  m.cluster(edsCluster(DB_CLUSTER), [{ ip: DB.endpoint, port: DB.port }]);
  m.listener(outboundTcpListener(BROKEN.vip, BROKEN.port, BROKEN_CLUSTER));
  m.listener(outboundTcpListener(DB.vip, DB.port, DB_CLUSTER));
  m.listener(virtualOutbound('ALLOW_ANY'));
  return m;
}

const text = (r: TcpResult) => r.received.map((b) => b.toString('utf8'));

describeWhenAvailable('a TCP chain to an upstream APISIX\'s schema refuses (real APISIX)', missingForPod(), () => {
  let pod: RunningPod;
  const noErrors = () => {
    const errors = pod.apisixErrors();
    expect(errors, describeLines(errors)).toEqual([]);
  };

  beforeAll(async () => {
    pod = await startPod({
      manifest: podManifest('web', NS, { app: 'web' }),
      xds: mesh().resources,
      clusterAddresses: [BROKEN.vip, BROKEN.endpoint, DB.vip, DB.endpoint],
    });
    await Promise.all([
      // where the app dialled: a connection passed through instead of refused would land here
      pod.cluster.serveTcp('broken-vip', BROKEN.vip, BROKEN.port),
      pod.cluster.serveTcp('db', DB.endpoint, DB.port),
    ]);
    await pod.kubelet.waitReady(60_000);
    expect(await pod.waitSynced(30_000)).toBe(true);
  }, 120_000);
  afterAll(async () => {
    await pod?.stop();
  });

  it('its connections are closed at once and reach nobody; the agent reports the listener (upstream-invalid) beside the cluster (schema-invalid); the healthy service works', async () => {
    const refused = await pod.app().tcp(BROKEN.vip, BROKEN.port, [{ send: 'anyone?\n', want: 8 }], 5000);
    expect(refused).toMatchObject({ closed: true });
    expect(refused.received[0]!.length).toBe(0);
    expect((await pod.cluster.served('broken-vip')).requests).toEqual([]);
    expect(text(await pod.app().tcp(DB.vip, DB.port, [{ send: 'row\n', want: 4 }], 5000))).toEqual(['row\n']);
    noErrors();
    const metrics = await pod.cluster.http({ url: `http://${POD_IP}:${PLAINTEXT_ISTIOD_CONFIG.ports.agentStatus}/metrics` });
    const page = 'body' in metrics ? metrics.body : '';
    expect(page).toContain('apisix_mesh_skipped_resources{kind="cluster",reason="schema-invalid"} 1');
    expect(page).toContain('apisix_mesh_skipped_resources{kind="listener",reason="upstream-invalid"} 1');
  }, 60_000);
});
