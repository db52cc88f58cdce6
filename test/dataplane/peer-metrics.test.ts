// Issues 14 and 16, telemetry complete enough for Kiali's graph, on the real APISIX of the pod
// harness:
// - Istio's HTTP metadata exchange: an inbound request carrying an Istio sidecar's
//   `x-envoy-peer-metadata` (a protobuf Struct encoded by protobufjs as Envoy sends it) is counted
//   with the client's workload, app, version, canonical service and cluster; the app never sees the
//   exchange headers, and the client gets ours back (it asked); a malformed header leaves the client
//   unknown and logs nothing; an outbound request carries our metadata to the server, whose
//   sidecar's answer fills the destination side and is removed before the app sees it; a server
//   without a sidecar is named by istiod's endpoint metadata (`istio.workload`), as Envoy does.
// - Istio's TCP metrics for connections the L4 front proxies, outbound (the destination workload
//   from istiod's endpoint metadata) and inbound, with the exact bytes each way; a connection denied by network RBAC is counted in
//   apisix_mesh_network_rbac_denied_total (and opens no TCP series).
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingForPod, podManifest } from '../support/pod/requirements.js';
import { startPod, type RunningPod } from '../support/pod/pod-harness.js';
import { POD_IP } from '../support/pod/network.js';
import { describeLines } from '../support/pod/apisix-log.js';
import { send } from '../support/echo-requests.js';
import { waitFor } from '../support/wait.js';
import { find, requestsCounted, samples, scrapeWhenCounted, type Sample } from '../support/prometheus-samples.js';
import { decodePeerMetadata, envoyPeerId, envoyPeerMetadata, type PeerWorkload } from '../support/envoy-peer-metadata.js';
import {
  allowAnyVirtualHost, blackHoleCluster, edsCluster, fqdn, httpRoute, inboundCluster, inboundPassthroughCluster, MeshResources, outboundCluster,
  outboundHttpListener, outboundTcpListener, passthroughCluster, rbacNetworkFilter, routeConfiguration, serviceVirtualHost, virtualInbound, virtualOutbound,
} from '../support/istio-xds.js';

const NS = 'shop';
const POD = 'frontend-5d8f7c9b4-x7k2p';
const APP_PORT = 8080;
const TCP_PORT = 5432;
const DENIED_PORT = 5433;
const CLIENT_IP = '10.244.9.5';
const REVIEWS = { vip: '10.96.40.1', endpoint: '10.244.40.1', port: 9080, host: fqdn('reviews', NS) };
const REVIEWS_CLUSTER = outboundCluster(80, REVIEWS.host);
const DB = { vip: '10.96.50.1', endpoint: '10.244.50.1', port: 5432, host: fqdn('db', 'data') };
/** a server whose pod has no sidecar answering the exchange: istiod's endpoint metadata names it */
const RATINGS = { vip: '10.96.60.1', endpoint: '10.244.60.1', port: 9080, host: fqdn('ratings', NS) };
const RATINGS_CLUSTER = outboundCluster(80, RATINGS.host);
const ENDPOINT_WORKLOAD = { ratings: `ratings-v1;${NS};ratings;v1;west`, db: 'postgres;data;postgres;;east' };
const DB_CLUSTER = outboundCluster(DB.port, DB.host);
const FRONTEND_HOST = fqdn('frontend', NS);
const BANNER = 'hello from the server\n';

/** The client calling us, an Istio sidecar's pod */
const PRODUCTPAGE: PeerWorkload = {
  pod: 'productpage-v1-6b746f74dc-9stvs', namespace: 'bookinfo', workload: 'productpage-v1', cluster: 'east',
  labels: { app: 'productpage', version: 'v1', 'service.istio.io/canonical-name': 'productpage', 'service.istio.io/canonical-revision': 'v1', 'security.istio.io/tlsMode': 'istio' },
};
/** The server we call, behind an Istio sidecar */
const REVIEWS_V2: PeerWorkload = {
  pod: 'reviews-v2-7d9c8b5f4-abcde', namespace: NS, workload: 'reviews-v2', cluster: 'west',
  labels: { app: 'reviews', version: 'v2', 'service.istio.io/canonical-name': 'reviews', 'service.istio.io/canonical-revision': 'v2' },
};

const inboundWithService = (port: number, host: string, name: string) => ({ ...inboundCluster(port), metadata: { filter_metadata: { istio: { services: [{ host, name, namespace: NS }] } } } });
const denyAll = rbacNetworkFilter('DENY', { 'ns[shop]-policy[deny-5433]-rule[0]': { permissions: [{ destination_port: DENIED_PORT }], principals: [{ any: true }] } });

function mesh(): MeshResources {
  const m = new MeshResources();
  m.cluster(edsCluster(REVIEWS_CLUSTER), [{ ip: REVIEWS.endpoint, port: REVIEWS.port }]);
  m.cluster(edsCluster(DB_CLUSTER), [{ ip: DB.endpoint, port: DB.port, workload: ENDPOINT_WORKLOAD.db }]);
  m.cluster(edsCluster(RATINGS_CLUSTER), [{ ip: RATINGS.endpoint, port: RATINGS.port, workload: ENDPOINT_WORKLOAD.ratings }]);
  m.route(routeConfiguration(80, [
    serviceVirtualHost(REVIEWS.host, 80, REVIEWS.vip, [httpRoute('default', { prefix: '/' }, { cluster: REVIEWS_CLUSTER })]),
    serviceVirtualHost(RATINGS.host, 80, RATINGS.vip, [httpRoute('default', { prefix: '/' }, { cluster: RATINGS_CLUSTER })]),
    allowAnyVirtualHost(),
  ]));
  m.cluster(passthroughCluster()).cluster(blackHoleCluster()).cluster(inboundPassthroughCluster());
  m.cluster(inboundWithService(APP_PORT, FRONTEND_HOST, 'frontend'));
  m.cluster(inboundWithService(TCP_PORT, FRONTEND_HOST, 'frontend'));
  m.cluster(inboundCluster(DENIED_PORT));
  m.listener(outboundHttpListener(80)).listener(outboundTcpListener(DB.vip, DB.port, DB_CLUSTER)).listener(virtualOutbound());
  m.listener(virtualInbound([
    { port: APP_PORT, service: FRONTEND_HOST },
    { port: TCP_PORT, service: FRONTEND_HOST, protocol: 'tcp' },
    { port: DENIED_PORT, service: FRONTEND_HOST, protocol: 'tcp', filters: [denyAll] },
  ]));
  return m;
}


const FRONTEND = { workload: 'frontend', workload_namespace: NS, app: 'frontend', version: 'v1', canonical_service: 'frontend', canonical_revision: 'v1', cluster: 'Kubernetes' };
const side = (prefix: 'source' | 'destination', values: Record<string, string>) => Object.fromEntries(Object.entries(values).map(([k, v]) => [`${prefix}_${k}`, v]));
const peerSide = (prefix: 'source' | 'destination', p: PeerWorkload) => side(prefix, {
  workload: p.workload, workload_namespace: p.namespace, app: p.labels['app']!, version: p.labels['version']!,
  canonical_service: p.labels['service.istio.io/canonical-name']!, canonical_revision: p.labels['service.istio.io/canonical-revision']!, cluster: p.cluster,
});
const UNKNOWN_PEER = (prefix: 'source' | 'destination') => side(prefix, Object.fromEntries(Object.keys(FRONTEND).map((k) => [k, 'unknown'])));
const TCP_LABELS = ['reporter', 'source_workload', 'source_workload_namespace', 'source_principal', 'source_app', 'source_version', 'source_canonical_service', 'source_canonical_revision', 'source_cluster',
  'destination_workload', 'destination_workload_namespace', 'destination_principal', 'destination_app', 'destination_version', 'destination_service', 'destination_service_name', 'destination_service_namespace',
  'destination_canonical_service', 'destination_canonical_revision', 'destination_cluster', 'request_protocol', 'response_flags', 'connection_security_policy'];

describeWhenAvailable('Istio\'s metadata exchange and TCP metrics from the APISIX sidecar (real APISIX, real kernel)', missingForPod(), () => {
  let pod: RunningPod;
  const scrape = async () => {
    const res = await pod.cluster.http({ url: `http://${POD_IP}:15020/stats/prometheus` });
    if (!('status' in res)) throw new Error(res.error);
    expect(res.status).toBe(200);
    return samples(res.body);
  };
  const noErrors = () => expect(pod.apisixErrors(), describeLines(pod.apisixErrors())).toEqual([]);
  const countedNow = async (reporter: string) => requestsCounted(await scrape(), reporter);
  const scrapeCounting = (reporter: string, base: number, more: number) => scrapeWhenCounted(scrape, reporter, base + more);
  const exchangeHeaders = (headers: Record<string, unknown>) => Object.keys(headers).filter((h) => h.startsWith('x-envoy-peer-metadata'));

  beforeAll(async () => {
    const manifest = podManifest(POD, NS, { app: 'frontend', version: 'v1', 'pod-template-hash': '5d8f7c9b4' }, [{ name: 'app', ports: [APP_PORT, TCP_PORT, DENIED_PORT] }]);
    pod = await startPod({ manifest, xds: mesh().resources, clusterAddresses: [REVIEWS.vip, REVIEWS.endpoint, RATINGS.vip, RATINGS.endpoint, DB.vip, DB.endpoint, CLIENT_IP] });
    await pod.kubelet.waitReady(30_000);
    expect(await pod.waitSynced()).toBe(true);
    await Promise.all([
      pod.app().serve('frontend', '0.0.0.0', APP_PORT),
      pod.app().serveTcp('frontend-tcp', '0.0.0.0', TCP_PORT, { banner: BANNER }),
      pod.app().serveTcp('frontend-denied', '0.0.0.0', DENIED_PORT, { banner: BANNER }),
      pod.cluster.serve('reviews', REVIEWS.endpoint, REVIEWS.port, { peerMetadata: { id: envoyPeerId(REVIEWS_V2, REVIEWS.endpoint), value: envoyPeerMetadata(REVIEWS_V2) } }),
      pod.cluster.serveTcp('db', DB.endpoint, DB.port, { banner: BANNER }),
      pod.cluster.serve('ratings', RATINGS.endpoint, RATINGS.port),
    ]);
  }, 90_000);
  afterAll(async () => {
    await pod?.stop();
  });

  it('inbound: the client sidecar\'s metadata fills the source side; the app sees no exchange header; the client gets ours back', async () => {
    const headers = { 'x-envoy-peer-metadata-id': envoyPeerId(PRODUCTPAGE, CLIENT_IP), 'x-envoy-peer-metadata': envoyPeerMetadata(PRODUCTPAGE) };
    const base = await countedNow('destination');
    for (let i = 0; i < 2; i++) {
      const res = await send(pod.cluster, { url: `http://${POD_IP}:${APP_PORT}/from-productpage`, headers, localAddress: CLIENT_IP });
      expect(res.status).toBe(200);
      expect(exchangeHeaders(res.echo!.headers)).toEqual([]);
      // Envoy's downstream propagation: our node id and metadata, since the request carried both
      expect(res.headers['x-envoy-peer-metadata-id']).toBe(`sidecar~${POD_IP}~${POD}.${NS}~${NS}.svc.cluster.local`);
      const ours = decodePeerMetadata(String(res.headers['x-envoy-peer-metadata'])) as { fields: Record<string, { stringValue?: string; structValue?: { fields: Record<string, { stringValue: string }> } }> };
      expect(ours.fields['WORKLOAD_NAME']?.stringValue).toBe('frontend');
      expect(ours.fields['NAMESPACE']?.stringValue).toBe(NS);
      expect(ours.fields['NAME']?.stringValue).toBe(POD);
      expect(ours.fields['LABELS']?.structValue?.fields['service.istio.io/canonical-name']?.stringValue).toBe('frontend');
    }
    // a client without the exchange gets none back
    const plain = await send(pod.cluster, { url: `http://${POD_IP}:${APP_PORT}/plain`, localAddress: CLIENT_IP });
    expect(exchangeHeaders(plain.headers)).toEqual([]);
    const all = await scrapeCounting('destination', base, 3);
    const fromProductpage = find(all, 'istio_requests_total', { reporter: 'destination', ...peerSide('source', PRODUCTPAGE), ...side('destination', FRONTEND), destination_service: FRONTEND_HOST, response_code: '200' });
    expect(fromProductpage.map((s) => s.value)).toEqual([2]);
    expect(fromProductpage[0]!.labels['source_principal']).toBe('unknown');
    expect(find(all, 'istio_requests_total', { reporter: 'destination', ...UNKNOWN_PEER('source'), response_code: '200' }).map((s) => s.value)).toEqual([1]);
    noErrors();
  });

  it('inbound: a malformed exchange header leaves the client unknown, is still removed, and logs nothing', async () => {
    const initial = await scrape();
    const base = requestsCounted(initial, 'destination');
    const before = find(initial, 'istio_requests_total', { reporter: 'destination', ...UNKNOWN_PEER('source'), response_code: '200' })[0]?.value ?? 0;
    const bad = [Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]).toString('base64'), '%%%not-base64%%%', Buffer.from('plain text').toString('base64'), 'A'.repeat(7000)];
    for (const value of bad) {
      const res = await send(pod.cluster, { url: `http://${POD_IP}:${APP_PORT}/malformed`, headers: { 'x-envoy-peer-metadata': value }, localAddress: CLIENT_IP });
      expect(res.status).toBe(200);
      expect(exchangeHeaders(res.echo!.headers)).toEqual([]);
    }
    const after = find(await scrapeCounting('destination', base, bad.length), 'istio_requests_total', { reporter: 'destination', ...UNKNOWN_PEER('source'), response_code: '200' })[0]!.value;
    expect(after - before).toBe(bad.length);
    noErrors();
    expect(pod.apisixLog().split('\n').filter((l) => /peer.metadata|peer_metadata|peer_exchange/i.test(l))).toEqual([]);
  });

  it('outbound: our metadata goes to the mesh server; its sidecar\'s answer fills the destination side and never reaches the app', async () => {
    const base = await countedNow('source');
    for (let i = 0; i < 3; i++) {
      const res = await send(pod.app(), { url: `http://${REVIEWS.vip}/reviews/${i}`, headers: { 'x-envoy-peer-metadata': 'the app cannot speak for the sidecar' } });
      expect(res.status).toBe(200);
      expect(exchangeHeaders(res.headers)).toEqual([]);
    }
    const seen = (await pod.cluster.served('reviews')).requests.at(-1)!.headers;
    expect(seen['x-envoy-peer-metadata-id']).toBe(`sidecar~${POD_IP}~${POD}.${NS}~${NS}.svc.cluster.local`);
    const ours = decodePeerMetadata(String(seen['x-envoy-peer-metadata'])) as { fields: Record<string, { stringValue?: string }> };
    expect(ours.fields['WORKLOAD_NAME']?.stringValue).toBe('frontend');
    expect(ours.fields['CLUSTER_ID']?.stringValue).toBe('Kubernetes');
    const all = await scrapeCounting('source', base, 3);
    const toReviews = find(all, 'istio_requests_total', { reporter: 'source', ...side('source', FRONTEND), ...peerSide('destination', REVIEWS_V2), destination_service: REVIEWS.host, destination_service_name: 'reviews', response_code: '200' });
    expect(toReviews.map((s) => s.value)).toEqual([3]);
    expect(toReviews[0]!.labels['destination_principal']).toBe('unknown');
    noErrors();
  });

  it('outbound to a server without a sidecar: the destination workload from istiod\'s endpoint metadata (no app or version there)', async () => {
    const base = await countedNow('source');
    for (let i = 0; i < 2; i++) expect((await send(pod.app(), { url: `http://${RATINGS.vip}/ratings/${i}` })).status).toBe(200);
    const all = await scrapeCounting('source', base, 2);
    const toRatings = find(all, 'istio_requests_total', {
      reporter: 'source', ...side('source', FRONTEND), destination_service: RATINGS.host, response_code: '200',
      ...side('destination', { workload: 'ratings-v1', workload_namespace: NS, canonical_service: 'ratings', canonical_revision: 'v1', cluster: 'west', app: 'unknown', version: 'unknown' }),
    });
    expect(toRatings.map((s) => s.value)).toEqual([2]);
    noErrors();
  });

  it('TCP out of the app: opened and closed, and the exact bytes each way, with the cluster\'s service and istiod\'s endpoint workload', async () => {
    const r = await pod.app().tcp(DB.vip, DB.port, [{ send: 'ping\n', want: BANNER.length + 5 }], 8000);
    expect(Buffer.concat(r.received).toString()).toBe(`${BANNER}ping\n`);
    const dbWorkload = side('destination', { workload: 'postgres', workload_namespace: 'data', canonical_service: 'postgres', canonical_revision: 'unknown', cluster: 'east', app: 'unknown', version: 'unknown' });
    const want = { reporter: 'source', ...side('source', FRONTEND), ...dbWorkload, destination_principal: 'unknown', destination_service: DB.host, destination_service_name: 'db', destination_service_namespace: 'data', request_protocol: 'tcp', response_flags: '-', connection_security_policy: 'unknown' };
    let all: Sample[] = [];
    await waitFor(async () => {
      all = await scrape();
      return find(all, 'istio_tcp_connections_closed_total', want)[0]?.value === 1;
    }, 30_000, 'the outbound TCP connection counted closed');
    const value = (name: string) => find(all, name, want).map((s) => s.value);
    expect(value('istio_tcp_connections_opened_total')).toEqual([1]);
    expect(value('istio_tcp_received_bytes_total')).toEqual([5]);
    expect(value('istio_tcp_sent_bytes_total')).toEqual([BANNER.length + 5]);
    expect(Object.keys(find(all, 'istio_tcp_sent_bytes_total', want)[0]!.labels)).toEqual(TCP_LABELS);
    noErrors();
  });

  it('TCP into the app: reporter destination, the inbound cluster\'s service, plaintext', async () => {
    for (let i = 0; i < 2; i++) {
      const r = await pod.cluster.tcp(POD_IP, TCP_PORT, [{ send: 'hello app\n', want: BANNER.length + 10 }], 8000, CLIENT_IP);
      expect(Buffer.concat(r.received).toString()).toBe(`${BANNER}hello app\n`);
    }
    const want = { reporter: 'destination', ...UNKNOWN_PEER('source'), ...side('destination', FRONTEND), destination_service: FRONTEND_HOST, destination_service_name: 'frontend', destination_service_namespace: NS, request_protocol: 'tcp', connection_security_policy: 'none' };
    let all: Sample[] = [];
    await waitFor(async () => {
      all = await scrape();
      return find(all, 'istio_tcp_connections_closed_total', want)[0]?.value === 2;
    }, 30_000, 'the inbound TCP connections counted closed');
    expect(find(all, 'istio_tcp_connections_opened_total', want).map((s) => s.value)).toEqual([2]);
    expect(find(all, 'istio_tcp_received_bytes_total', want).map((s) => s.value)).toEqual([20]);
    expect(find(all, 'istio_tcp_sent_bytes_total', want).map((s) => s.value)).toEqual([2 * (BANNER.length + 10)]);
    noErrors();
  });

  it('network RBAC: each denied connection is counted (apisix_mesh_network_rbac_denied_total) and opens no TCP series', async () => {
    const before = await scrape();
    const denied = (all: Sample[]) => find(all, 'apisix_mesh_network_rbac_denied_total', {})[0]?.value;
    expect(denied(before)).toBe(0);
    const opened = (all: Sample[]) => find(all, 'istio_tcp_connections_opened_total', {}).reduce((sum, s) => sum + s.value, 0);
    for (let i = 0; i < 3; i++) {
      const r = await pod.cluster.tcp(POD_IP, DENIED_PORT, [{ send: 'ping\n', want: BANNER.length + 5 }], 5000, CLIENT_IP);
      expect(r.closed).toBe(true);
      expect(Buffer.concat(r.received).length).toBe(0);
    }
    const after = await scrape();
    expect(denied(after)).toBe(3);
    expect(opened(after)).toBe(opened(before));
    expect((await pod.app().served('frontend-denied')).count).toBe(0);
    // the denials are the front's warnings, never errors
    expect(pod.apisixErrors(), describeLines(pod.apisixErrors())).toEqual([]);
  });
});
