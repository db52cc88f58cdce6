// An IPv6-first dual-stack pod on the real APISIX: its status.podIP (what the kubelet probes, what
// the agent pins as INSTANCE_IP) is the IPv6 address. The probes reach APISIX's status API and the
// agent's status port on that address, Prometheus scrapes APISIX's export and the merged endpoint
// there, and both still answer on the IPv4 address. Inbound connections to a declared port go to
// the address the client dialled, whichever family it is (Envoy's original-destination inbound
// cluster), from ::6 or 127.0.0.6. APISIX's error log in every test.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingForPod, podManifest } from '../support/pod/requirements.js';
import { PLAINTEXT_ISTIOD_CONFIG, startPod, type RunningPod } from '../support/pod/pod-harness.js';
import { POD_IP, POD_IP6 } from '../support/pod/network.js';
import { describeLines } from '../support/pod/apisix-log.js';
import { send } from '../support/echo-requests.js';
import type { TcpResult } from '../support/pod/worker-client.js';
import { addDualStackPodSide, MeshResources } from '../support/istio-xds.js';
import { APISIX_METRICS_PATH } from '../../webhook/injection/apisix-config.js';

const NS = 'data';
const WEB_PORT = 8000;
const PG_PORT = 5432;
const { ports } = PLAINTEXT_ISTIOD_CONFIG;

function mesh(): MeshResources {
  return addDualStackPodSide(new MeshResources(), NS, { web: WEB_PORT, pg: PG_PORT });
}

const text = (r: TcpResult) => r.received.map((b) => b.toString('utf8'));
const url = (ip: string, port: number, path: string) => `http://${ip.includes(':') ? `[${ip}]` : ip}:${port}${path}`;

describeWhenAvailable('an IPv6-first dual-stack pod (real APISIX)', missingForPod(), () => {
  let pod: RunningPod;
  const noErrors = () => {
    const errors = pod.apisixErrors();
    expect(errors, describeLines(errors)).toEqual([]);
  };

  beforeAll(async () => {
    pod = await startPod({
      manifest: podManifest('web', NS, { app: 'web' }, [{ name: 'app', ports: [WEB_PORT, PG_PORT] }]),
      xds: mesh().resources,
      dualStack: 'ipv6-first',
    });
    await Promise.all([pod.app().serve('web', '::', WEB_PORT), pod.app().serveTcp('pg', '::', PG_PORT)]);
  }, 60_000);
  afterAll(async () => {
    await pod?.stop();
  });

  it('becomes Ready: the kubelet\'s probes to the IPv6 pod IP reach APISIX\'s status API and the agent\'s status port', async () => {
    await pod.kubelet.waitReady(20_000);
    for (const ip of [POD_IP6, POD_IP]) {
      const apisix = await pod.cluster.http({ url: url(ip, ports.apisixStatus, '/status/ready'), timeoutMs: 2000 });
      expect('status' in apisix && apisix.status, `APISIX's status API on ${ip}`).toBe(200);
      const agent = await pod.cluster.http({ url: url(ip, ports.agentStatus, '/healthz/ready'), timeoutMs: 2000 });
      expect('status' in agent && agent.status, `the agent's status port on ${ip}`).toBe(200);
    }
    noErrors();
  });

  it('Prometheus scrapes APISIX\'s export and the merged endpoint on the IPv6 address as on the IPv4 one', async () => {
    await pod.kubelet.waitReady(20_000);
    for (const ip of [POD_IP6, POD_IP]) {
      const apisix = await pod.cluster.http({ url: url(ip, ports.apisixMetrics, APISIX_METRICS_PATH), timeoutMs: 2000 });
      expect('status' in apisix && apisix.status, `APISIX's export on ${ip}`).toBe(200);
      expect('body' in apisix ? apisix.body : '').toContain('apisix_etcd_modify_indexes');
      const merged = await pod.cluster.http({ url: url(ip, ports.agentStatus, '/stats/prometheus'), timeoutMs: 5000 });
      expect('status' in merged && merged.status, `the merged endpoint on ${ip}`).toBe(200);
      expect('body' in merged ? merged.body : '').toContain('apisix_etcd_modify_indexes');
    }
    noErrors();
  });

  it('inbound HTTP to a declared port goes to the address dialled: IPv4 from 127.0.0.6, IPv6 from ::6 (not to the pinned IPv6 pod IP)', async () => {
    await pod.kubelet.waitReady(20_000);
    const v4 = await send(pod.cluster, { url: url(POD_IP, WEB_PORT, '/four'), headers: { host: 'web.data' } });
    expect(v4.status).toBe(200);
    expect(v4.echo).toMatchObject({ name: 'web', url: '/four', peer: '::ffff:127.0.0.6' });
    const v6 = await send(pod.cluster, { url: url(POD_IP6, WEB_PORT, '/six'), headers: { host: 'web.data' } });
    expect(v6.status).toBe(200);
    expect(v6.echo).toMatchObject({ name: 'web', url: '/six', peer: '::6' });
    noErrors();
  });

  it('inbound TCP to a declared port goes to the address dialled, bytes untouched', async () => {
    await pod.kubelet.waitReady(20_000);
    const echo = (ip: string, message: string) => pod.cluster.tcp(ip, PG_PORT, [{ send: message, want: Buffer.byteLength(message) }], 5000);
    expect(text(await echo(POD_IP, 'select 4\n'))).toEqual(['select 4\n']);
    expect(text(await echo(POD_IP6, 'select 6\n'))).toEqual(['select 6\n']);
    expect((await pod.app().served('pg')).requests.map((r) => r.peer)).toEqual(['::ffff:127.0.0.6', '::6']);
    noErrors();
  });
});
