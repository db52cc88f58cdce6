// An IPv6-only pod on the real APISIX, as in a Kubernetes IPv6-only cluster: eth0 has POD_IP6 and
// no IPv4 address or route (lo keeps 127.0.0.1 and ::1), the Services' ClusterIPs are IPv6, istiod's
// name resolves to an IPv6 address (the agent dials `[v6]:15010`), INSTANCE_IP is the IPv6 pod IP,
// and istiod writes its configuration for an IPv6 proxy (Istio ≥ 1.23: listeners on `::`, one
// inbound pass-through from `::6`). The pod turns Ready through the kubelet's probes to its IPv6
// address (APISIX's status API, the agent's status port, the app's probe the agent runs), outbound
// HTTP to an IPv6 service is routed, outbound TCP to a service and TCP/TLS outside the mesh reach
// their IPv6 destinations, inbound HTTP and TCP to declared ports reach the app from ::6, and the
// agent's status and merged metrics answer on IPv6. APISIX's error log in every test.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { generateCa, generateServingCert } from '../../webhook/certificates/generate.js';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingForPod } from '../support/pod/requirements.js';
import { ISTIOD_IP6, PLAINTEXT_ISTIOD_CONFIG, startPod, type RunningPod } from '../support/pod/pod-harness.js';
import { CLUSTER_GATEWAY_IP6, POD_IP6 } from '../support/pod/network.js';
import { describeLines } from '../support/pod/apisix-log.js';
import { send } from '../support/echo-requests.js';
import type { Echo, HttpAnswer, NetnsWorker, TcpResult } from '../support/pod/worker-client.js';
import {
  addIpv6OnlyPodSide, allowAnyVirtualHost, edsCluster, fqdn, httpRoute, MeshResources,
  outboundCluster, outboundHttpListener, outboundTcpListener, routeConfiguration, serviceVirtualHost,
} from '../support/istio-xds.js';
import { APISIX_METRICS_PATH } from '../../webhook/injection/apisix-config.js';

const NS = 'data';
const { ports } = PLAINTEXT_ISTIOD_CONFIG;
/** how long a test waits for the pod to turn Ready (process start-up on a loaded machine) */
const READY_WAIT_MS = 60_000;

/** An HTTP mesh service of an IPv6-only cluster: its ClusterIP and endpoint are IPv6. */
const CHECKOUT = { vip: 'fd00:96::44:7', port: 8080, host: fqdn('checkout', NS), endpoint: 'fd00:244::5:11' };
const CHECKOUT_CLUSTER = outboundCluster(CHECKOUT.port, CHECKOUT.host);
/** A TCP mesh service: istiod binds its listener to the IPv6 ClusterIP. */
const DB = { vip: 'fd00:96::50:10', port: 9000, host: fqdn('db', NS), endpoint: 'fd00:244::7:11' };
const DB_CLUSTER = outboundCluster(DB.port, DB.host);
/** Outside the mesh (ALLOW_ANY passes them through). */
const EXTERNAL = { http: 'fd00:203::50', tcp: 'fd00:203::60', tcpPort: 7000, https: 'fd00:203::443', httpsName: 'external.example.org' };

/** The pod's ports: HTTP and TCP declared by its services, and ones nobody declares (the pass-through). */
const WEB_PORT = 8000;
const PG_PORT = 5432;
const UNDECLARED_HTTP_PORT = 6080;
const UNDECLARED_TCP_PORT = 6000;

function mesh(): MeshResources {
  const m = new MeshResources();
  m.cluster(edsCluster(CHECKOUT_CLUSTER), [{ ip: CHECKOUT.endpoint, port: CHECKOUT.port }]);
  m.cluster(edsCluster(DB_CLUSTER), [{ ip: DB.endpoint, port: DB.port }]);
  // istiod's wildcard for an IPv6 proxy is `::`: the port's HTTP listener is `::_8080`
  m.listener(outboundHttpListener(CHECKOUT.port, 'ALLOW_ANY', '::'));
  // an IPv6 ClusterIP is a domain in brackets (as a Host header carries it)
  m.route(routeConfiguration(CHECKOUT.port, [serviceVirtualHost(CHECKOUT.host, CHECKOUT.port, `[${CHECKOUT.vip}]`, [httpRoute('default', { prefix: '/' }, { cluster: CHECKOUT_CLUSTER })]), allowAnyVirtualHost()]));
  m.listener(outboundTcpListener(DB.vip, DB.port, DB_CLUSTER));
  return addIpv6OnlyPodSide(m, NS, { web: WEB_PORT, pg: PG_PORT });
}

/** A CA only the app trusts, and the external HTTPS server's certificate. */
function certificates(): { ca: string; server: { cert: string; key: string } } {
  const ca = generateCa({ commonName: 'ipv6-only-test-ca' });
  const { certPem, keyPem } = generateServingCert(ca, [EXTERNAL.httpsName], { days: 1 });
  return { ca: ca.certPem, server: { cert: certPem, key: keyPem } };
}

const text = (r: TcpResult) => r.received.map((b) => b.toString('utf8'));

/** the --xds-address arguments of the processes running in the pod (the agent's, as it runs) */
function xdsAddresses(pod: RunningPod): string[] {
  const pids = spawnSync('ip', ['netns', 'pids', pod.network.pod], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean);
  return pids.flatMap((pid) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter((a) => a.startsWith('--xds-address='));
    } catch {
      return []; // gone meanwhile
    }
  });
}

/** istiod was told the pod's IPv6 address (node id and INSTANCE_IPS), from which it takes the proxy's IP mode */
function expectIpv6Node(pod: RunningPod): void {
  const node = pod.istiod.requests.find((r) => r.node)?.node;
  expect(node?.['id']).toBe(`sidecar~${POD_IP6}~web.${NS}~${NS}.svc.cluster.local`);
  const fields = (node?.['metadata'] as { fields: Record<string, Record<string, unknown>> }).fields;
  expect(fields['INSTANCE_IPS']).toMatchObject({ stringValue: POD_IP6 });
}
const url = (ip: string, port: number, path: string) => `http://[${ip}]:${port}${path}`;

describeWhenAvailable('an IPv6-only pod (real APISIX)', missingForPod(), () => {
  let pod: RunningPod;
  let ca: string;
  const app = (): NetnsWorker => pod.app();
  const served = async (worker: NetnsWorker, name: string) => (await worker.served(name)).requests;
  const noErrors = () => {
    const errors = pod.apisixErrors();
    expect(errors, describeLines(errors)).toEqual([]);
  };
  const echo = (worker: NetnsWorker, ip: string, port: number, message: string): Promise<TcpResult> =>
    worker.tcp(ip, port, [{ send: message, want: Buffer.byteLength(message) }], 5000);

  beforeAll(async () => {
    const certs = certificates();
    ca = certs.ca;
    pod = await startPod({
      manifest: {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: 'web', namespace: NS, labels: { app: 'web' } },
        spec: {
          serviceAccountName: 'web',
          containers: [
            {
              name: 'app',
              image: 'example.com/app:1',
              ports: [WEB_PORT, PG_PORT].map((containerPort) => ({ containerPort, protocol: 'TCP' })),
              // rewritten to the agent's status port: the agent probes the app at the IPv6 pod IP
              readinessProbe: { httpGet: { path: '/ready', port: WEB_PORT }, timeoutSeconds: 1 },
            },
          ],
        },
      },
      xds: mesh().resources,
      ipv6Only: true,
      clusterAddresses: [CHECKOUT.vip, CHECKOUT.endpoint, DB.vip, DB.endpoint, EXTERNAL.http, EXTERNAL.tcp, EXTERNAL.https],
    });
    const cluster = pod.cluster;
    await Promise.all([
      cluster.serve('checkout', CHECKOUT.endpoint, CHECKOUT.port),
      // where the app dialled: a connection passed through instead of sent to the cluster would land here
      cluster.serve('checkout-vip', CHECKOUT.vip, CHECKOUT.port),
      cluster.serveTcp('db', DB.endpoint, DB.port),
      cluster.serveTcp('db-vip', DB.vip, DB.port),
      cluster.serve('external-http', EXTERNAL.http, CHECKOUT.port),
      cluster.serveTcp('external-tcp', EXTERNAL.tcp, EXTERNAL.tcpPort),
      cluster.serveTls('external-https', EXTERNAL.https, 443, certs.server),
      app().serve('web', '::', WEB_PORT),
      app().serveTcp('pg', '::', PG_PORT),
      app().serve('undeclared-http', '::', UNDECLARED_HTTP_PORT),
      app().serveTcp('undeclared-tcp', '::', UNDECLARED_TCP_PORT),
    ]);
  }, 90_000);
  afterAll(async () => {
    await pod?.stop();
  });

  it('the pod is IPv6-only: no IPv4 address but loopback\'s, no IPv4 route; INSTANCE_IP and the agent\'s xDS address are IPv6', () => {
    const ip = (...args: string[]) => spawnSync('ip', ['-n', pod.network.pod, ...args], { encoding: 'utf8' }).stdout;
    expect(ip('-4', '-o', 'addr', 'show').trim().split('\n').map((l) => l.split(/\s+/)[3])).toEqual(['127.0.0.1/8']);
    expect(ip('-4', 'route', 'show').trim()).toBe('');
    expect(pod.podIp).toBe(POD_IP6);
    const agent = pod.injected.spec!.containers.find((c) => c.args?.some((a) => a.startsWith('--xds-address=')))!;
    expect(agent.env?.find((e) => e.name === 'INSTANCE_IP')?.valueFrom?.fieldRef?.fieldPath).toBe('status.podIP');
    // the agent as it runs: istiod's name resolved as the cluster's DNS would, to its IPv6 ClusterIP
    const pids = spawnSync('ip', ['netns', 'pids', pod.network.pod], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean);
    const xdsAddresses = pids.flatMap((pid) => {
        try {
          return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter((a) => a.startsWith('--xds-address='));
        } catch {
          return []; // gone meanwhile
        }
      });
    expect(xdsAddresses).toEqual([`--xds-address=[${ISTIOD_IP6}]:15010`]);
    // and istiod was reached there and told the pod's IPv6 address, from which it takes the proxy's IP mode
    const node = pod.istiod.requests.find((r) => r.node)?.node;
    expect(node?.['id']).toBe(`sidecar~${POD_IP6}~web.${NS}~${NS}.svc.cluster.local`);
    const fields = (node?.['metadata'] as { fields: Record<string, Record<string, unknown>> }).fields;
    expect(fields['INSTANCE_IPS']).toMatchObject({ stringValue: POD_IP6 });
  });

  it('becomes Ready: the kubelet\'s probes to the IPv6 pod IP reach APISIX\'s status API, the agent\'s status port and, through the agent, the app', async () => {
    await pod.kubelet.waitReady(READY_WAIT_MS);
    const apisix = await pod.cluster.http({ url: url(POD_IP6, ports.apisixStatus, '/status/ready'), timeoutMs: 2000 });
    expect('status' in apisix && apisix.status, 'APISIX\'s status API').toBe(200);
    const agent = await pod.cluster.http({ url: url(POD_IP6, ports.agentStatus, '/healthz/ready'), timeoutMs: 2000 });
    expect('status' in agent && agent.status, 'the agent\'s status port').toBe(200);
    const probe = await pod.cluster.http({ url: url(POD_IP6, ports.agentStatus, '/app-health/app/readyz'), timeoutMs: 5000 });
    expect('status' in probe && probe.status, 'the app\'s probe, run by the agent').toBe(200);
    // the agent's probe of the app left from ::6 to the IPv6 pod IP (probe-target.ts)
    expect((await served(app(), 'web')).filter((r) => r.url === '/ready').map((r) => r.peer)).toContain('::6');
    expect(await pod.waitSynced(30_000)).toBe(true);
    noErrors();
  }, READY_WAIT_MS + 30_000);

  it('Prometheus scrapes APISIX\'s export and the merged endpoint on the IPv6 pod IP', async () => {
    await pod.kubelet.waitReady(READY_WAIT_MS);
    const apisix = await pod.cluster.http({ url: url(POD_IP6, ports.apisixMetrics, APISIX_METRICS_PATH), timeoutMs: 5000 });
    expect('status' in apisix && apisix.status).toBe(200);
    expect('body' in apisix ? apisix.body : '').toContain('apisix_etcd_modify_indexes');
    const merged = await pod.cluster.http({ url: url(POD_IP6, ports.agentStatus, '/stats/prometheus'), timeoutMs: 5000 });
    expect('status' in merged && merged.status).toBe(200);
    expect('body' in merged ? merged.body : '').toContain('apisix_etcd_modify_indexes');
    expect('body' in merged ? merged.body : '').toContain('apisix_mesh_store_revision');
    noErrors();
  }, READY_WAIT_MS + 30_000);

  it('outbound HTTP to an IPv6 ClusterIP is routed to the service\'s endpoint (by the `::_8080` listener); to an IPv6 host outside the mesh it passes through', async () => {
    await pod.kubelet.waitReady(READY_WAIT_MS);
    const byName = await send(app(), { url: url(CHECKOUT.vip, CHECKOUT.port, '/cart'), headers: { host: CHECKOUT.host } });
    expect(byName.status).toBe(200);
    expect(byName.echo).toMatchObject({ name: 'checkout', url: '/cart', peer: POD_IP6 });
    // the Host header a client sends for the address itself
    const byAddress = await send(app(), { url: url(CHECKOUT.vip, CHECKOUT.port, '/by-address') });
    expect(byAddress.status).toBe(200);
    expect(byAddress.echo).toMatchObject({ name: 'checkout', url: '/by-address', peer: POD_IP6 });
    expect(await served(pod.cluster, 'checkout-vip')).toEqual([]);
    const outside = await send(app(), { url: url(EXTERNAL.http, CHECKOUT.port, '/ext'), headers: { host: 'ext.example.org' } });
    expect(outside.status).toBe(200);
    expect(outside.echo).toMatchObject({ name: 'external-http', url: '/ext', peer: POD_IP6 });
    noErrors();
  }, READY_WAIT_MS + 30_000);

  it('outbound TCP to an IPv6 ClusterIP goes to the service\'s endpoint; TCP and TLS to IPv6 hosts outside the mesh pass through (the handshake is the server\'s own)', async () => {
    await pod.kubelet.waitReady(READY_WAIT_MS);
    expect(text(await echo(app(), DB.vip, DB.port, 'row over v6\n'))).toEqual(['row over v6\n']);
    expect((await served(pod.cluster, 'db')).map((r) => r.peer)).toEqual([POD_IP6]);
    expect(await served(pod.cluster, 'db-vip')).toEqual([]);
    expect(text(await echo(app(), EXTERNAL.tcp, EXTERNAL.tcpPort, 'hello v6\n'))).toEqual(['hello v6\n']);
    expect((await served(pod.cluster, 'external-tcp')).map((r) => r.peer)).toEqual([POD_IP6]);
    const res = await app().http({ url: `https://[${EXTERNAL.https}]:443/hello`, servername: EXTERNAL.httpsName, ca, headers: { host: EXTERNAL.httpsName }, timeoutMs: 5000 });
    expect(res).toMatchObject({ status: 200 });
    // the client trusted only the test CA and checked the name: APISIX did not terminate TLS
    expect(JSON.parse((res as HttpAnswer).body) as Echo).toMatchObject({ name: 'external-https', servername: EXTERNAL.httpsName, url: '/hello', peer: POD_IP6 });
    noErrors();
  }, READY_WAIT_MS + 30_000);

  it('inbound HTTP to a declared port reaches the app at the IPv6 address dialled, from ::6, the client\'s address forwarded; an undeclared port passes through (InboundPassthroughCluster) from ::6', async () => {
    await pod.kubelet.waitReady(READY_WAIT_MS);
    const res = await send(pod.cluster, { url: url(POD_IP6, WEB_PORT, '/in'), headers: { host: 'web.data' } });
    expect(res.status).toBe(200);
    expect(res.echo).toMatchObject({ name: 'web', url: '/in', peer: '::6' });
    expect(res.echo?.headers['x-forwarded-for']).toBe(CLUSTER_GATEWAY_IP6);
    const other = await send(pod.cluster, { url: url(POD_IP6, UNDECLARED_HTTP_PORT, '/other'), headers: { host: 'web.data' } });
    expect(other.status).toBe(200);
    expect(other.echo).toMatchObject({ name: 'undeclared-http', url: '/other', peer: '::6' });
    noErrors();
  }, READY_WAIT_MS + 30_000);

  it('inbound TCP reaches the app from ::6, bytes untouched, on a declared port and on an undeclared one', async () => {
    await pod.kubelet.waitReady(READY_WAIT_MS);
    expect(text(await echo(pod.cluster, POD_IP6, PG_PORT, 'select 6\n'))).toEqual(['select 6\n']);
    expect((await served(app(), 'pg')).map((r) => r.peer)).toEqual(['::6']);
    expect(text(await echo(pod.cluster, POD_IP6, UNDECLARED_TCP_PORT, 'raw v6\n'))).toEqual(['raw v6\n']);
    expect((await served(app(), 'undeclared-tcp')).map((r) => r.peer)).toEqual(['::6']);
    noErrors();
  }, READY_WAIT_MS + 30_000);
});

describeWhenAvailable('an IPv6-only pod that resolves istiod\'s name itself (real APISIX)', missingForPod(), () => {
  let pod: RunningPod;

  beforeAll(async () => {
    pod = await startPod({
      manifest: { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'web', namespace: NS, labels: { app: 'web' } }, spec: { serviceAccountName: 'web', containers: [{ name: 'app', image: 'example.com/app:1' }] } },
      xds: mesh().resources,
      ipv6Only: true,
      istiodResolvedInPod: true,
    });
  }, 90_000);
  afterAll(async () => {
    await pod?.stop();
  });

  it('the agent dials istiod by its name, which the pod resolves to the IPv6 ClusterIP alone, and the pod turns Ready on its configuration', async () => {
    expect(xdsAddresses(pod)).toEqual([`--xds-address=${PLAINTEXT_ISTIOD_CONFIG.istiodAddress}`]);
    await pod.kubelet.waitReady(READY_WAIT_MS);
    expectIpv6Node(pod);
    expect(await pod.waitSynced(30_000)).toBe(true);
    expect((await pod.agentObjects()).upstreams).toBeGreaterThan(0);
    const errors = pod.apisixErrors();
    expect(errors, describeLines(errors)).toEqual([]);
  }, READY_WAIT_MS + 30_000);
});
