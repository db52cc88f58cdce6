// IPv6 through the L4 front on the real APISIX: a dual-stack pod (IPv4 first, as most dual-stack
// clusters) whose app dials IPv6 service addresses and hosts outside the mesh, and is dialled on its
// IPv6 address from the cluster side. The init container installs the IPv6 capture rules (the pod
// has a global IPv6 address) and puts ::6 on lo; the front listens on [::]:15001/15006, reads the
// IPv6 original destination, matches istiod's IPv6 chains (IPv6 prefixes, a dual-stack service's
// additional address), hands HTTP to APISIX with the IPv6 destination in its record, and forwards
// inbound from ::6 where the address connected to is IPv6 (from 127.0.0.6 where it is IPv4: the pod
// IP the agent pins for a declared port). APISIX's error log in every test.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingForPod, podManifest } from '../support/pod/requirements.js';
import { startPod, type RunningPod } from '../support/pod/pod-harness.js';
import { CLUSTER_GATEWAY_IP6, POD_IP6 } from '../support/pod/network.js';
import { describeLines } from '../support/pod/apisix-log.js';
import { send } from '../support/echo-requests.js';
import type { NetnsWorker, TcpResult } from '../support/pod/worker-client.js';
import {
  addDualStackPodSide, allowAnyVirtualHost, dualStackWildcard, edsCluster, fqdn, httpRoute, MeshResources,
  outboundCluster, outboundHttpListener, outboundSniffedListener, outboundTcpListener, tcpProxyFilter, routeConfiguration, serviceVirtualHost,
} from '../support/istio-xds.js';

const NS = 'data';

/** An HTTP mesh service with an IPv6 VIP (a dual-stack Service: its route's domains carry both). */
const CHECKOUT = { vip: '10.96.44.7', vip6: 'fd00:96::44:7', port: 8080, host: fqdn('checkout', NS), endpoint: 'fd00:244::5:11' };
const CHECKOUT_CLUSTER = outboundCluster(CHECKOUT.port, CHECKOUT.host);
/** A TCP mesh service, dual-stack: istiod's listener is bound to the IPv4 VIP with the IPv6 one as additional address. */
const DB = { vip: '10.96.50.10', vip6: 'fd00:96::50:10', port: 9000, host: fqdn('db', NS), endpoint: 'fd00:244::7:11' };
const DB_CLUSTER = outboundCluster(DB.port, DB.host);
/**
 * A dual-stack service port of no declared protocol: istiod binds its listener to the IPv4 VIP with
 * the IPv6 one as additional address, and its HTTP chain's routes (RDS `<host>:<port>`) serve both.
 */
const ORDERS = { vip: '10.96.60.9', vip6: 'fd00:96::60:9', port: 8081, host: fqdn('orders', NS), endpoint: 'fd00:244::6:11' };
const ORDERS_CLUSTER = outboundCluster(ORDERS.port, ORDERS.host);
/** Outside the mesh, IPv6 only (ALLOW_ANY passes them through). */
const EXTERNAL = { http: 'fd00:203::50', tcp: 'fd00:203::60', tcpPort: 7000 };
/**
 * A listener on EXTERNAL.tcpPort whose one chain matches an IPv6 prefix (as istiod writes for
 * services by their addresses on a shared port): its addresses go to a cluster, others on the port
 * take the default chain (the pass-through).
 */
const LEGACY = { prefix: 'fd00:203::70', length: 124, dialled: 'fd00:203::7a', endpoint: 'fd00:244::9:1' };
const LEGACY_CLUSTER = outboundCluster(EXTERNAL.tcpPort, fqdn('legacy', NS));
/**
 * A port whose one listener istiod bound to `0.0.0.0` alone (its shape for a proxy it takes for
 * IPv4-only), routing every host to a cluster. Envoy hands a connection to a wildcard listener of
 * the destination's family only: an IPv6 connection to the port stays with virtualOutbound, whose
 * catch-all passes it through to where the app dialled.
 */
const V4_ONLY = { port: 8090, host: fqdn('v4only', NS), endpoint: 'fd00:244::8:11' };
const V4_ONLY_CLUSTER = outboundCluster(V4_ONLY.port, V4_ONLY.host);

/** The pod's ports: HTTP and TCP declared by its services, and ones nobody declares (the pass-through). */
const WEB_PORT = 8000;
const PG_PORT = 5432;
const UNDECLARED_HTTP_PORT = 6080;
const UNDECLARED_TCP_PORT = 6000;

function mesh(): MeshResources {
  const m = new MeshResources();
  m.cluster(edsCluster(CHECKOUT_CLUSTER), [{ ip: CHECKOUT.endpoint, port: CHECKOUT.port }]);
  m.cluster(edsCluster(DB_CLUSTER), [{ ip: DB.endpoint, port: DB.port }]);
  // a dual-stack proxy's per-port listener: 0.0.0.0 with [::] as additional address (istiod's shape, see dualStackWildcard)
  m.listener(outboundHttpListener(CHECKOUT.port, 'ALLOW_ANY', 'dual'));
  const checkout = serviceVirtualHost(CHECKOUT.host, CHECKOUT.port, CHECKOUT.vip, [httpRoute('default', { prefix: '/' }, { cluster: CHECKOUT_CLUSTER })]);
  (checkout.domains as string[]).push(`[${CHECKOUT.vip6}]`);
  m.route(routeConfiguration(CHECKOUT.port, [checkout, allowAnyVirtualHost()]));
  m.listener(outboundTcpListener(DB.vip, DB.port, DB_CLUSTER, [DB.vip6]));
  m.cluster(edsCluster(ORDERS_CLUSTER), [{ ip: ORDERS.endpoint, port: ORDERS.port }]);
  m.listener(outboundSniffedListener(ORDERS.vip, ORDERS.port, ORDERS.host, ORDERS_CLUSTER, [ORDERS.vip6]));
  const orders = serviceVirtualHost(ORDERS.host, ORDERS.port, ORDERS.vip, [httpRoute('default', { prefix: '/' }, { cluster: ORDERS_CLUSTER })]);
  (orders.domains as string[]).push(`[${ORDERS.vip6}]`);
  m.route({ ...routeConfiguration(ORDERS.port, [orders]), name: `${ORDERS.host}:${ORDERS.port}` });
  m.cluster(edsCluster(LEGACY_CLUSTER), [{ ip: LEGACY.endpoint, port: EXTERNAL.tcpPort }]);
  m.listener({
    name: `0.0.0.0_${EXTERNAL.tcpPort}`,
    address: { socket_address: { address: '0.0.0.0', port_value: EXTERNAL.tcpPort } },
    additional_addresses: dualStackWildcard(EXTERNAL.tcpPort),
    filter_chains: [{ filter_chain_match: { prefix_ranges: [{ address_prefix: LEGACY.prefix, prefix_len: LEGACY.length }] }, filters: [tcpProxyFilter(LEGACY_CLUSTER)] }],
    default_filter_chain: { filters: [tcpProxyFilter('PassthroughCluster')], name: 'PassthroughFilterChain' },
    traffic_direction: 'OUTBOUND',
    bind_to_port: false,
  });
  m.cluster(edsCluster(V4_ONLY_CLUSTER), [{ ip: V4_ONLY.endpoint, port: V4_ONLY.port }]);
  m.listener(outboundHttpListener(V4_ONLY.port));
  m.route(routeConfiguration(V4_ONLY.port, [{ name: 'any', domains: ['*'], routes: [httpRoute('default', { prefix: '/' }, { cluster: V4_ONLY_CLUSTER })] }]));
  return addDualStackPodSide(m, NS, { web: WEB_PORT, pg: PG_PORT });
}

const text = (r: TcpResult) => r.received.map((b) => b.toString('utf8'));

describeWhenAvailable('IPv6 through the L4 front: a dual-stack pod (real APISIX)', missingForPod(), () => {
  let pod: RunningPod;
  const app = (): NetnsWorker => pod.app();
  const served = async (worker: NetnsWorker, name: string) => (await worker.served(name)).requests;
  const noErrors = () => {
    const errors = pod.apisixErrors();
    expect(errors, describeLines(errors)).toEqual([]);
  };
  const echo = (worker: NetnsWorker, ip: string, port: number, message: string): Promise<TcpResult> =>
    worker.tcp(ip, port, [{ send: message, want: Buffer.byteLength(message) }], 5000);

  beforeAll(async () => {
    pod = await startPod({
      manifest: podManifest('web', NS, { app: 'web' }, [{ name: 'app', ports: [WEB_PORT, PG_PORT] }]),
      xds: mesh().resources,
      dualStack: true,
      clusterAddresses: [CHECKOUT.vip6, CHECKOUT.endpoint, ORDERS.vip6, ORDERS.endpoint, DB.vip6, DB.endpoint, EXTERNAL.http, EXTERNAL.tcp, LEGACY.dialled, LEGACY.endpoint, V4_ONLY.endpoint],
    });
    const cluster = pod.cluster;
    await Promise.all([
      cluster.serve('checkout', CHECKOUT.endpoint, CHECKOUT.port),
      // where the app dialled: a connection passed through instead of sent to the cluster would land here
      cluster.serve('checkout-vip', CHECKOUT.vip6, CHECKOUT.port),
      cluster.serve('orders', ORDERS.endpoint, ORDERS.port),
      cluster.serve('orders-vip', ORDERS.vip6, ORDERS.port),
      cluster.serveTcp('db', DB.endpoint, DB.port),
      cluster.serveTcp('db-vip', DB.vip6, DB.port),
      cluster.serve('external-http', EXTERNAL.http, CHECKOUT.port),
      cluster.serve('v4only', V4_ONLY.endpoint, V4_ONLY.port),
      cluster.serve('external-v4only-port', EXTERNAL.http, V4_ONLY.port),
      cluster.serveTcp('external-tcp', EXTERNAL.tcp, EXTERNAL.tcpPort),
      cluster.serveTcp('legacy', LEGACY.endpoint, EXTERNAL.tcpPort),
      cluster.serveTcp('legacy-dialled', LEGACY.dialled, EXTERNAL.tcpPort),
      app().serve('web', '::', WEB_PORT),
      app().serveTcp('pg', '::', PG_PORT),
      app().serve('undeclared-http', '::', UNDECLARED_HTTP_PORT),
      app().serveTcp('undeclared-tcp', '::', UNDECLARED_TCP_PORT),
    ]);
    await pod.kubelet.waitReady(20_000);
    expect(await pod.waitSynced()).toBe(true);
  }, 60_000);
  afterAll(async () => {
    await pod?.stop();
  });

  it('outbound HTTP to a service\'s IPv6 address is routed to its endpoint; to an IPv6 host outside the mesh it passes through to where the app dialled', async () => {
    const res = await send(app(), { url: `http://[${CHECKOUT.vip6}]:${CHECKOUT.port}/cart`, headers: { host: CHECKOUT.host } });
    expect(res.status).toBe(200);
    expect(res.echo).toMatchObject({ name: 'checkout', url: '/cart', peer: POD_IP6 });
    const outside = await send(app(), { url: `http://[${EXTERNAL.http}]:${CHECKOUT.port}/ext`, headers: { host: 'ext.example.org' } });
    expect(outside.status).toBe(200);
    expect(outside.echo).toMatchObject({ name: 'external-http', url: '/ext', peer: POD_IP6 });
    expect(await served(pod.cluster, 'checkout-vip')).toEqual([]);
    noErrors();
  });

  it('outbound HTTP to the IPv6 address of a dual-stack service whose listener is bound to its IPv4 address (additional_addresses) is routed by that listener\'s routes', async () => {
    const res = await send(app(), { url: `http://[${ORDERS.vip6}]:${ORDERS.port}/order/6`, headers: { host: ORDERS.host } });
    expect(res.status).toBe(200);
    expect(res.echo).toMatchObject({ name: 'orders', url: '/order/6', peer: POD_IP6 });
    expect(await served(pod.cluster, 'orders-vip')).toEqual([]);
    noErrors();
  });

  it('outbound TCP to a dual-stack service\'s IPv6 address goes to its endpoint (the listener\'s additional address); to an IPv6 host outside the mesh it passes through', async () => {
    expect(text(await echo(app(), DB.vip6, DB.port, 'row over v6\n'))).toEqual(['row over v6\n']);
    expect((await served(pod.cluster, 'db')).map((r) => r.peer)).toEqual([POD_IP6]);
    expect(await served(pod.cluster, 'db-vip')).toEqual([]);
    expect(text(await echo(app(), EXTERNAL.tcp, EXTERNAL.tcpPort, 'hello v6\n'))).toEqual(['hello v6\n']);
    expect((await served(pod.cluster, 'external-tcp')).map((r) => r.peer)).toEqual([POD_IP6]);
    noErrors();
  });

  it('a filter chain matching an IPv6 prefix takes the addresses inside it to its cluster; an address outside it on the same port passes through', async () => {
    expect(text(await echo(app(), LEGACY.dialled, EXTERNAL.tcpPort, 'in the prefix\n'))).toEqual(['in the prefix\n']);
    expect((await served(pod.cluster, 'legacy')).map((r) => r.peer)).toEqual([POD_IP6]);
    expect(await served(pod.cluster, 'legacy-dialled')).toEqual([]);
    const before = (await served(pod.cluster, 'external-tcp')).length;
    expect(text(await echo(app(), EXTERNAL.tcp, EXTERNAL.tcpPort, 'outside it\n'))).toEqual(['outside it\n']);
    expect(await served(pod.cluster, 'external-tcp')).toHaveLength(before + 1);
    expect(await served(pod.cluster, 'legacy')).toHaveLength(1);
    noErrors();
  });

  it('IPv6 to a port whose listener is bound to 0.0.0.0 alone is not that listener\'s: virtualOutbound passes it through to where the app dialled, as Envoy (the wildcard of the destination\'s family only)', async () => {
    const res = await send(app(), { url: `http://[${EXTERNAL.http}]:${V4_ONLY.port}/v6`, headers: { host: 'anything.example.org' } });
    expect(res.status).toBe(200);
    expect(res.echo).toMatchObject({ name: 'external-v4only-port', url: '/v6', peer: POD_IP6 });
    expect(await served(pod.cluster, 'v4only')).toEqual([]);
    noErrors();
  });

  it('inbound HTTP to the pod\'s IPv6 address: a declared port reaches the app at the address dialled, from ::6 (the client\'s IPv6 address forwarded), an undeclared one passes through from ::6', async () => {
    const res = await send(pod.cluster, { url: `http://[${POD_IP6}]:${WEB_PORT}/in`, headers: { host: 'web.data' } });
    expect(res.status).toBe(200);
    // as Envoy's inbound cluster (original destination): the IPv6 address, not the pinned IPv4 pod IP
    expect(res.echo).toMatchObject({ name: 'web', url: '/in', peer: '::6' });
    expect(res.echo?.headers['x-forwarded-for']).toBe(CLUSTER_GATEWAY_IP6);
    const other = await send(pod.cluster, { url: `http://[${POD_IP6}]:${UNDECLARED_HTTP_PORT}/other`, headers: { host: 'web.data' } });
    expect(other.status).toBe(200);
    expect(other.echo).toMatchObject({ name: 'undeclared-http', url: '/other', peer: '::6' });
    noErrors();
  });

  it('inbound TCP to the pod\'s IPv6 address: bytes untouched on a declared port (to the address dialled) and on an undeclared one, from ::6', async () => {
    expect(text(await echo(pod.cluster, POD_IP6, PG_PORT, 'select 6\n'))).toEqual(['select 6\n']);
    expect((await served(app(), 'pg')).map((r) => r.peer)).toEqual(['::6']);
    expect(text(await echo(pod.cluster, POD_IP6, UNDECLARED_TCP_PORT, 'raw v6\n'))).toEqual(['raw v6\n']);
    expect((await served(app(), 'undeclared-tcp')).map((r) => r.peer)).toEqual(['::6']);
    noErrors();
  });
});
