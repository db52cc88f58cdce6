// The L4 front hands each HTTP connection it finds to APISIX's HTTP listener over loopback; that
// listener is a reuseport group, one socket per worker, and without steering the kernel's hash sends
// about half of the hand-offs to the other worker (two processes woken per request instead of one).
// handoff_steering.lua attaches a BPF program to the group that picks the socket of the worker whose
// front made the hand-off. Checked from the kernel's side on the real APISIX: for every handed-off
// connection the front's socket and the accepted socket belong to the same process.
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingForPod, podManifest } from '../support/pod/requirements.js';
import { startPod, type RunningPod } from '../support/pod/pod-harness.js';
import { POD_IP } from '../support/pod/network.js';
import { describeLines } from '../support/pod/apisix-log.js';
import { loadCanonical } from '../support/xds-fixtures.js';
import { HTTP_HANDOFF_PORT } from '../../webhook/injection/apisix-config.js';

const SERVICE_VIP = '10.96.44.7';
const HOST = 'checkout.shop.svc.cluster.local';
const T = 'type.googleapis.com/';
const CONNECTIONS = 16;
/** how long each connection stays open after its answer, so that all are open at once */
const HOLD_MS = 3_000;

/** A socket of the pod's namespace: its two ends and the process holding it. */
interface Socket { local: string; peer: string; pid: number }

function establishedSockets(netns: string): Socket[] {
  const out = spawnSync('ip', ['netns', 'exec', netns, 'ss', '-tnpH', 'state', 'established'], { encoding: 'utf8' });
  if (out.status !== 0) throw new Error(`ss failed: ${out.stderr}`);
  return out.stdout.split('\n').flatMap((line) => {
    const m = /^\s*\d+\s+\d+\s+(\S+)\s+(\S+)\s+users:\(\("[^"]*",pid=(\d+)/.exec(line);
    return m ? [{ local: m[1]!, peer: m[2]!, pid: Number(m[3]) }] : [];
  });
}

/** Each hand-off (a connection from 127.128.0.0/9 to the HTTP listener): the front's process and the listener's. */
function handoffs(netns: string): Array<{ address: string; front: number; listener: number }> {
  const sockets = establishedSockets(netns);
  const listenerSide = new Map(sockets.filter((s) => s.local === `127.0.0.1:${HTTP_HANDOFF_PORT}`).map((s) => [s.peer, s.pid]));
  return sockets
    .filter((s) => s.peer === `127.0.0.1:${HTTP_HANDOFF_PORT}` && s.local.startsWith('127.'))
    .flatMap((s) => (listenerSide.has(s.local) ? [{ address: s.local, front: s.pid, listener: listenerSide.get(s.local)! }] : []));
}

describeWhenAvailable('hand-offs stay in the worker whose front accepted the connection (real APISIX)', missingForPod(), () => {
  let pod: RunningPod;
  beforeAll(async () => {
    const canary = loadCanonical('synthetic-canary-xds-responses.json');
    const inbound = loadCanonical('istio-sidecar-listeners-configdump.yaml').listener.find((l) => l['name'] === 'virtualInbound')!;
    // the inbound listener without its policy filters (the fixture's RBAC/ext_authz are refused)
    const stripped = JSON.parse(JSON.stringify(inbound, (k, v) => (k === 'filters' || k === 'http_filters') && Array.isArray(v) ? v.filter((f: { name?: string }) => !/rbac|ext_authz/.test(f.name ?? '')) : v)) as Record<string, unknown>;
    const original = (name: string) => ({ '@type': `${T}envoy.config.cluster.v3.Cluster`, name, type: 'ORIGINAL_DST', lb_policy: 'CLUSTER_PROVIDED', connect_timeout: '10s' });
    pod = await startPod({
      manifest: podManifest('shop', 'default', { app: 'shop' }, [{ name: 'shop', ports: [80] }]),
      xds: { ...canary, cluster: [...canary.cluster, original('inbound|80||'), original('InboundPassthroughClusterIpv4')], listener: [...canary.listener, stripped] },
      clusterAddresses: [SERVICE_VIP, '10.244.5.21', '10.244.5.11', '10.244.5.12'],
    });
    for (const [name, ip] of [['stable-1', '10.244.5.11'], ['stable-2', '10.244.5.12'], ['canary', '10.244.5.21']] as const) await pod.cluster.serve(name, ip, 8080);
    await pod.kubelet.waitReady(20_000);
  }, 60_000);
  afterAll(async () => {
    await pod?.stop();
  });

  it('every handed-off connection is accepted by the process whose front made it', async () => {
    const request = `GET /steering HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`;
    // keep-alive connections held open after their answer (the extra byte never comes)
    const held = Array.from({ length: CONNECTIONS }, () => pod.app().tcp(SERVICE_VIP, 8080, [{ send: request, want: 1 << 20 }], HOLD_MS));
    let seen: ReturnType<typeof handoffs> = [];
    for (let i = 0; i < 20 && seen.length < CONNECTIONS; i++) {
      await new Promise((r) => setTimeout(r, 100));
      seen = handoffs(pod.network.pod);
    }
    const answers = await Promise.all(held);
    for (const a of answers) expect(Buffer.concat(a.received).toString('latin1')).toMatch(/^HTTP\/1\.1 200 /);
    expect(seen.length, JSON.stringify(seen)).toBe(CONNECTIONS);
    expect(seen.filter((h) => h.front !== h.listener), JSON.stringify(seen)).toEqual([]);
    expect(pod.apisixErrors(), describeLines(pod.apisixErrors())).toEqual([]);
    expect(pod.apisixLog().split('\n').filter((l) => l.includes('not kept in the front')), 'steering attached').toEqual([]);
  }, 30_000);

  it('inbound hand-offs are steered too', async () => {
    await pod.app().serve('shop', '0.0.0.0', 80);
    const request = `GET /in HTTP/1.1\r\nHost: shop\r\n\r\n`;
    const held = Array.from({ length: CONNECTIONS }, () => pod.cluster.tcp(POD_IP, 80, [{ send: request, want: 1 << 20 }], HOLD_MS));
    let seen: ReturnType<typeof handoffs> = [];
    for (let i = 0; i < 20 && seen.length < CONNECTIONS; i++) {
      await new Promise((r) => setTimeout(r, 100));
      seen = handoffs(pod.network.pod);
    }
    const answers = await Promise.all(held);
    for (const a of answers) expect(Buffer.concat(a.received).toString('latin1')).toMatch(/^HTTP\/1\.1 200 /);
    expect(seen.length, JSON.stringify(seen)).toBe(CONNECTIONS);
    expect(seen.filter((h) => h.front !== h.listener), JSON.stringify(seen)).toEqual([]);
    expect(pod.apisixErrors(), describeLines(pod.apisixErrors())).toEqual([]);
  }, 30_000);
});
