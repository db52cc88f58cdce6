// The L4 front hands each HTTP connection it finds to APISIX's HTTP listener over loopback; that
// listener is a reuseport group, one socket per worker, and without steering the kernel's hash sends
// about half of the hand-offs to the other worker (two processes woken per request instead of one).
// handoff_steering.lua attaches a BPF program to the group that picks the socket of the worker whose
// front made the hand-off. Checked from the kernel's side on the real APISIX: for every handed-off
// connection the front's socket and the accepted socket belong to the same process.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingForPod, podManifest } from '../support/pod/requirements.js';
import { startPod, type RunningPod } from '../support/pod/pod-harness.js';
import type { NetnsWorker } from '../support/pod/worker-client.js';
import { waitForHandoffs, type Handoff } from '../support/pod/handoffs.js';
import { POD_IP } from '../support/pod/network.js';
import { describeLines } from '../support/pod/apisix-log.js';
import { canaryWithInbound } from '../support/xds-fixtures.js';
import { HTTP_HANDOFF_PORT } from '../../webhook/injection/apisix-config.js';

const SERVICE_VIP = '10.96.44.7';
const HOST = 'checkout.shop.svc.cluster.local';
const CONNECTIONS = 16;
/** how long each connection stays open after its answer, so that all are open at once */
const HOLD_MS = 3_000;

/**
 * CONNECTIONS keep-alive connections from `client` to `host:port`, each held open after its answer;
 * the hand-offs seen while they are all open.
 */
async function heldConnections(pod: RunningPod, client: NetnsWorker, host: string, port: number, hostHeader: string): Promise<Handoff[]> {
  const request = `GET /steering HTTP/1.1\r\nHost: ${hostHeader}\r\n\r\n`;
  // the extra byte never comes: each connection stays open until HOLD_MS
  const held = Array.from({ length: CONNECTIONS }, () => client.tcp(host, port, [{ send: request, want: 1 << 20 }], HOLD_MS));
  const seen = await waitForHandoffs(pod.network.pod, HTTP_HANDOFF_PORT, CONNECTIONS);
  const answers = await Promise.all(held);
  for (const a of answers) expect(Buffer.concat(a.received).toString('latin1')).toMatch(/^HTTP\/1\.1 200 /);
  return seen;
}

describeWhenAvailable('hand-offs stay in the worker whose front accepted the connection (real APISIX)', missingForPod(), () => {
  let pod: RunningPod;
  beforeAll(async () => {
    pod = await startPod({
      manifest: podManifest('shop', 'default', { app: 'shop' }, [{ name: 'shop', ports: [80] }]),
      xds: canaryWithInbound(),
      clusterAddresses: [SERVICE_VIP, '10.244.5.21', '10.244.5.11', '10.244.5.12'],
    });
    await pod.app().serve('shop', '0.0.0.0', 80);
    for (const [name, ip] of [['stable-1', '10.244.5.11'], ['stable-2', '10.244.5.12'], ['canary', '10.244.5.21']] as const) await pod.cluster.serve(name, ip, 8080);
    await pod.kubelet.waitReady(20_000);
  }, 60_000);
  afterAll(async () => {
    await pod?.stop();
  });

  it('outbound: every handed-off connection is accepted by the process whose front made it', async () => {
    const seen = await heldConnections(pod, pod.app(), SERVICE_VIP, 8080, HOST);
    expect(seen.length, JSON.stringify(seen)).toBe(CONNECTIONS);
    expect(seen.filter((h) => h.front !== h.listener), JSON.stringify(seen)).toEqual([]);
    expect(pod.apisixErrors(), describeLines(pod.apisixErrors())).toEqual([]);
    expect(pod.apisixLog().split('\n').filter((l) => l.includes('not kept in the front')), 'steering attached').toEqual([]);
  }, 30_000);

  it('inbound: the same', async () => {
    const seen = await heldConnections(pod, pod.cluster, POD_IP, 80, 'shop');
    expect(seen.length, JSON.stringify(seen)).toBe(CONNECTIONS);
    expect(seen.filter((h) => h.front !== h.listener), JSON.stringify(seen)).toEqual([]);
    expect(pod.apisixErrors(), describeLines(pod.apisixErrors())).toEqual([]);
  }, 30_000);
});
