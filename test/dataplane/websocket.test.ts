// WebSocket through the sidecar, both ways, on the real APISIX: Istio's connection managers allow
// upgrades on every route, and so must the APISIX routes (`enable_websocket`), or the Upgrade
// request reaches the server without its Upgrade/Connection headers.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingForPod, podManifest } from '../support/pod/requirements.js';
import { startPod, type RunningPod } from '../support/pod/pod-harness.js';
import { POD_IP } from '../support/pod/network.js';
import { describeLines } from '../support/pod/apisix-log.js';
import { canaryWithInbound } from '../support/xds-fixtures.js';

const SERVICE_VIP = '10.96.44.7';
const HOST = 'checkout.shop.svc.cluster.local';
const EXTERNAL = '203.0.113.40';

describeWhenAvailable('WebSocket upgrades through the sidecar (real APISIX)', missingForPod(), () => {
  let pod: RunningPod;
  beforeAll(async () => {
    pod = await startPod({
      manifest: podManifest('chat', 'default', { app: 'chat' }, [{ name: 'chat', ports: [80] }]),
      xds: canaryWithInbound(),
      clusterAddresses: [SERVICE_VIP, '10.244.5.21', '10.244.5.11', '10.244.5.12', EXTERNAL],
    });
    await pod.app().serve('chat', '0.0.0.0', 80);
    for (const [name, ip] of [['stable-1', '10.244.5.11'], ['stable-2', '10.244.5.12'], ['canary', '10.244.5.21'], ['external', EXTERNAL]] as const) await pod.cluster.serve(name, ip, 8080);
    await pod.kubelet.waitReady(20_000);
  }, 60_000);
  afterAll(async () => {
    await pod?.stop();
  });

  it('outbound: the app upgrades a connection to a mesh service and talks through it', async () => {
    const res = await pod.app().upgrade({ url: `http://${SERVICE_VIP}:8080/ws`, headers: { host: HOST }, message: 'hello' });
    expect(res).toMatchObject({ status: 101, echoed: expect.stringMatching(/^stable-[12]:hello$/) });
    expect(pod.apisixErrors(), describeLines(pod.apisixErrors())).toEqual([]);
  });

  it('outbound pass-through: an upgrade to a host outside the mesh (ALLOW_ANY) goes through too', async () => {
    const res = await pod.app().upgrade({ url: `http://${EXTERNAL}:8080/ws`, headers: { host: 'chat.example.com' }, message: 'out' });
    expect(res).toMatchObject({ status: 101, echoed: 'external:out' });
  });

  it('inbound: a client in the cluster upgrades a connection to the app', async () => {
    const res = await pod.cluster.upgrade({ url: `http://${POD_IP}:80/ws`, message: 'in' });
    expect(res).toMatchObject({ status: 101, echoed: 'chat:in' });
    const seen = (await pod.app().served('chat')).requests.at(-1)!;
    expect(seen.peer).toBe('127.0.0.6');
    expect(pod.apisixErrors(), describeLines(pod.apisixErrors())).toEqual([]);
  });
});
