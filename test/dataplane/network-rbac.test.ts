// Istio's AuthorizationPolicy on TCP ports (Envoy's network RBAC filter) judged by the real APISIX's
// L4 front, per connection, before anything is forwarded: an ALLOW on a source CIDR lets the listed
// client through and closes another's connection; a DENY on a port (as istiod writes `to: ports`
// on every TCP chain of the workload) closes that port's connections and lets the other port's
// through; a DENY on a source CIDR closes only that source's. Denied connections never reach the app
// (which greets each connection with a banner: a client that got none was never connected to it,
// and the app counts none), and each denial is in APISIX's error log.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingForPod, podManifest } from '../support/pod/requirements.js';
import { startPod, type RunningPod } from '../support/pod/pod-harness.js';
import { POD_IP } from '../support/pod/network.js';
import { describeLines } from '../support/pod/apisix-log.js';
import type { TcpResult } from '../support/pod/worker-client.js';
import {
  blackHoleCluster, fqdn, inboundCluster, inboundPassthroughCluster, MeshResources, passthroughCluster, rbacNetworkFilter, virtualInbound, virtualOutbound,
} from '../support/istio-xds.js';

const NS = 'data';
const ALLOWED_CLIENT = '10.244.9.5';
const OTHER_CLIENT = '10.244.8.5';
/** ALLOW from 10.244.9.0/24 */
const ALLOW_PORT = 5440;
/** DENY to port 5441, on both chains (istiod puts a workload's TCP policy on each TCP chain) */
const DENIED_PORT = 5441;
const OPEN_PORT = 5442;
/** DENY from 10.244.8.0/24 */
const DENY_SOURCE_PORT = 5443;
const PORTS = [ALLOW_PORT, DENIED_PORT, OPEN_PORT, DENY_SOURCE_PORT];
const BANNER = 'hello from the app\n';

const cidr = (address_prefix: string, prefix_len: number) => ({ address_prefix, prefix_len });
const allowFromNine = rbacNetworkFilter('ALLOW', { 'ns[data]-policy[from-nine]-rule[0]': { permissions: [{ any: true }], principals: [{ source_ip: cidr('10.244.9.0', 24) }] } });
const denyPort = rbacNetworkFilter('DENY', { 'ns[data]-policy[deny-5441]-rule[0]': { permissions: [{ destination_port: DENIED_PORT }], principals: [{ any: true }] } });
const denyFromEight = rbacNetworkFilter('DENY', { 'ns[data]-policy[not-eight]-rule[0]': { permissions: [{ any: true }], principals: [{ remote_ip: cidr('10.244.8.0', 24) }] } });

function mesh(): MeshResources {
  const m = new MeshResources();
  m.cluster(passthroughCluster()).cluster(blackHoleCluster()).cluster(inboundPassthroughCluster());
  for (const port of PORTS) m.cluster(inboundCluster(port));
  m.listener(
    virtualInbound([
      { port: ALLOW_PORT, service: fqdn('db', NS), protocol: 'tcp', filters: [allowFromNine] },
      { port: DENIED_PORT, service: fqdn('db', NS), protocol: 'tcp', filters: [denyPort] },
      { port: OPEN_PORT, service: fqdn('db', NS), protocol: 'tcp', filters: [denyPort] },
      { port: DENY_SOURCE_PORT, service: fqdn('db', NS), protocol: 'tcp', filters: [denyFromEight] },
    ]),
  );
  return m.listener(virtualOutbound());
}

describeWhenAvailable('network RBAC on inbound TCP ports, judged by the L4 front (real APISIX)', missingForPod(), () => {
  let pod: RunningPod;
  const served = async (port: number) => (await pod.app().served(`db-${port}`)).count;
  /**
   * The client speaks first (the front looks at the first bytes of a port whose chains differ by
   * transport), the app answers with its banner on accept and then echoes: a client that got no
   * banner was never connected to the app.
   */
  const connect = (port: number, from: string): Promise<TcpResult> =>
    pod.cluster.tcp(POD_IP, port, [{ send: 'ping\n', want: BANNER.length + 5 }], 5000, from);
  const through = (r: TcpResult) => expect(Buffer.concat(r.received).toString()).toBe(`${BANNER}ping\n`);
  const refused = (r: TcpResult) => {
    expect(r.closed).toBe(true);
    expect(Buffer.concat(r.received).length).toBe(0);
  };
  const denials = () => pod.apisixLog().split('\n').filter((l) => l.includes('denied by network RBAC'));

  beforeAll(async () => {
    pod = await startPod({
      manifest: podManifest('db', NS, { app: 'db' }, [{ name: 'db', ports: PORTS }]),
      xds: mesh().resources,
      clusterAddresses: [ALLOWED_CLIENT, OTHER_CLIENT],
    });
    await Promise.all(PORTS.map((port) => pod.app().serveTcp(`db-${port}`, '0.0.0.0', port, { banner: BANNER })));
    await pod.kubelet.waitReady(20_000);
  }, 60_000);
  afterAll(async () => {
    await pod?.stop();
  });

  it('ALLOW from a source CIDR: the listed client gets through, another is closed before the app sees it', async () => {
    through(await connect(ALLOW_PORT, ALLOWED_CLIENT));
    expect(await served(ALLOW_PORT)).toBe(1);
    const before = denials().length;
    refused(await connect(ALLOW_PORT, OTHER_CLIENT));
    expect(await served(ALLOW_PORT)).toBe(1);
    const logged = denials().slice(before);
    expect(logged).toHaveLength(1);
    expect(logged[0]).toMatch(new RegExp(`\\[warn\\].*connection from ${OTHER_CLIENT} to ${POD_IP}:${ALLOW_PORT} denied by network RBAC filter envoy\\.filters\\.network\\.rbac`));
    expect(pod.apisixErrors(), describeLines(pod.apisixErrors())).toEqual([]);
  });

  it('DENY on a port: its connections are closed, from any client; the other port under the same filter is open', async () => {
    for (const from of [ALLOWED_CLIENT, OTHER_CLIENT]) refused(await connect(DENIED_PORT, from));
    expect(await served(DENIED_PORT)).toBe(0);
    through(await connect(OPEN_PORT, OTHER_CLIENT));
    expect(await served(OPEN_PORT)).toBe(1);
    expect(denials().filter((l) => l.includes(`to ${POD_IP}:${DENIED_PORT} `))).toHaveLength(2);
    expect(pod.apisixErrors(), describeLines(pod.apisixErrors())).toEqual([]);
  });

  it('DENY from a source CIDR: only that source is closed', async () => {
    refused(await connect(DENY_SOURCE_PORT, OTHER_CLIENT));
    through(await connect(DENY_SOURCE_PORT, ALLOWED_CLIENT));
    expect(await served(DENY_SOURCE_PORT)).toBe(1);
    expect(pod.apisixErrors(), describeLines(pod.apisixErrors())).toEqual([]);
  });
});
