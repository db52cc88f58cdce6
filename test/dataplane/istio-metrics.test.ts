// Issue 14, telemetry: Istio's standard HTTP metrics (istio_requests_total and the duration and
// size histograms) for the traffic through the APISIX sidecar, on the pod's merged endpoint
// (15020/stats/prometheus), so that Kiali and Istio's dashboards see APISIX pods. On the real
// APISIX of the pod harness: requests out of the app (reporter source) and into it (reporter
// destination) are counted with the local workload's labels, the destination service of the
// route's cluster and the response code; the label sets are bounded.
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { V1Pod } from '@kubernetes/client-node';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingForPod, podManifest } from '../support/pod/requirements.js';
import { startPod, type RunningPod } from '../support/pod/pod-harness.js';
import { POD_IP } from '../support/pod/network.js';
import { describeLines } from '../support/pod/apisix-log.js';
import { send } from '../support/echo-requests.js';
import { find, requestsCounted, samples, scrapeWhenCounted } from '../support/prometheus-samples.js';
import {
  allowAnyVirtualHost, blackHoleCluster, edsCluster, fqdn, httpRoute, inboundCluster, inboundPassthroughCluster, MeshResources, outboundCluster,
  outboundHttpListener, passthroughCluster, routeConfiguration, serviceVirtualHost, virtualInbound, virtualOutbound,
} from '../support/istio-xds.js';

const NS = 'shop';
/** A Deployment's pod: Istio's workload is the Deployment's name */
const POD = 'frontend-5d8f7c9b4-x7k2p';
const APP_PORT = 8080;
const REVIEWS = { vip: '10.96.40.1', endpoint: '10.244.40.1', port: 9080, host: fqdn('reviews', NS) };
const REVIEWS_CLUSTER = outboundCluster(80, REVIEWS.host);
const MAX_SERIES = 40;
const FRONTEND_HOST = fqdn('frontend', NS);

function mesh(): MeshResources {
  const m = new MeshResources();
  m.cluster(edsCluster(REVIEWS_CLUSTER), [{ ip: REVIEWS.endpoint, port: REVIEWS.port }]);
  m.route(routeConfiguration(80, [serviceVirtualHost(REVIEWS.host, 80, REVIEWS.vip, [httpRoute('default', { prefix: '/' }, { cluster: REVIEWS_CLUSTER })]), allowAnyVirtualHost()]));
  m.cluster(passthroughCluster()).cluster(blackHoleCluster()).cluster(inboundPassthroughCluster());
  // istiod names the service an app port serves in the inbound cluster's metadata
  m.cluster({ ...inboundCluster(APP_PORT), metadata: { filter_metadata: { istio: { services: [{ host: FRONTEND_HOST, name: 'frontend', namespace: NS }] } } } });
  m.listener(outboundHttpListener(80)).listener(virtualOutbound()).listener(virtualInbound([{ port: APP_PORT, service: FRONTEND_HOST }]));
  return m;
}

/** The agent with a small series bound, so that a test can reach it. */
function withMaxSeries(pod: V1Pod): V1Pod {
  const agent = pod.spec!.initContainers?.find((c) => c.name === 'apisix-mesh-agent') ?? pod.spec!.containers.find((c) => c.name === 'apisix-mesh-agent')!;
  agent.args = [...(agent.args ?? []), `--istio-metrics-max-series=${MAX_SERIES}`];
  return pod;
}



/** What the sidecar knows of itself in every series: the pod's labels. */
const FRONTEND = { workload: 'frontend', workload_namespace: NS, app: 'frontend', version: 'v1', canonical_service: 'frontend', canonical_revision: 'v1', cluster: 'Kubernetes' };
const side = (prefix: 'source' | 'destination', values: Record<string, string>) => Object.fromEntries(Object.entries(values).map(([k, v]) => [`${prefix}_${k}`, v]));
const UNKNOWN_PEER = (prefix: 'source' | 'destination') => side(prefix, Object.fromEntries(Object.keys(FRONTEND).map((k) => [k, 'unknown'])));

describeWhenAvailable('Istio\'s standard metrics from the APISIX sidecar (real APISIX, real kernel)', missingForPod(), () => {
  let pod: RunningPod;
  const scrape = async () => {
    const res = await pod.cluster.http({ url: `http://${POD_IP}:15020/stats/prometheus` });
    if (!('status' in res)) throw new Error(res.error);
    expect(res.status).toBe(200);
    expect(res.body).not.toContain('# apisix-mesh:');
    return samples(res.body);
  };
  const noErrors = () => expect(pod.apisixErrors(), describeLines(pod.apisixErrors())).toEqual([]);
  const scrapeCounting = (reporter: string, atLeast: number) => scrapeWhenCounted(scrape, reporter, atLeast);

  beforeAll(async () => {
    const manifest = podManifest(POD, NS, { app: 'frontend', version: 'v1', 'pod-template-hash': '5d8f7c9b4' }, [{ name: 'app', ports: [APP_PORT] }]);
    pod = await startPod({ manifest, xds: mesh().resources, clusterAddresses: [REVIEWS.vip, REVIEWS.endpoint], mutateInjected: withMaxSeries });
    await pod.kubelet.waitReady(30_000);
    expect(await pod.waitSynced()).toBe(true);
    await Promise.all([pod.app().serve('frontend', '0.0.0.0', APP_PORT), pod.cluster.serve('reviews', REVIEWS.endpoint, REVIEWS.port)]);
  }, 60_000);
  afterAll(async () => {
    await pod?.stop();
  });

  it('requests out of the app: reporter source, the route\'s destination service, by response code, with the duration and size histograms', async () => {
    for (let i = 0; i < 3; i++) expect((await send(pod.app(), { url: `http://${REVIEWS.vip}/reviews/${i}` })).status).toBe(200);
    expect((await send(pod.app(), { url: `http://${REVIEWS.vip}/reviews?status=503` })).status).toBe(503);
    const all = await scrapeCounting('source', 4);
    const outbound = {
      reporter: 'source',
      ...side('source', FRONTEND),
      source_principal: 'unknown',
      ...UNKNOWN_PEER('destination'),
      destination_principal: 'unknown',
      destination_service: REVIEWS.host,
      destination_service_name: 'reviews',
      destination_service_namespace: NS,
      request_protocol: 'http',
      grpc_response_status: '',
      response_flags: '-',
      connection_security_policy: 'unknown',
    };
    const ok = find(all, 'istio_requests_total', { ...outbound, response_code: '200' });
    expect(ok.map((s) => s.value)).toEqual([3]);
    expect(Object.keys(ok[0]!.labels)).toHaveLength(25);
    expect(find(all, 'istio_requests_total', { ...outbound, response_code: '503' }).map((s) => s.value)).toEqual([1]);
    // Envoy's buckets, cumulative, +Inf = the count = the requests
    const buckets = find(all, 'istio_request_duration_milliseconds_bucket', { ...outbound, response_code: '200' });
    expect(buckets.map((b) => b.labels['le'])).toEqual(['0.5', '1', '5', '10', '25', '50', '100', '250', '500', '1000', '2500', '5000', '10000', '30000', '60000', '300000', '600000', '1800000', '3600000', '+Inf']);
    expect(buckets.map((b) => b.value)).toEqual([...buckets.map((b) => b.value)].sort((a, b) => a - b));
    expect(buckets.at(-1)!.value).toBe(3);
    expect(find(all, 'istio_request_duration_milliseconds_count', { ...outbound, response_code: '200' })[0]!.value).toBe(3);
    // request line + headers, at least "GET /reviews/0 HTTP/1.1\r\n" each; the echo's answer is larger
    expect(find(all, 'istio_request_bytes_sum', { ...outbound, response_code: '200' })[0]!.value).toBeGreaterThan(3 * 25);
    expect(find(all, 'istio_response_bytes_sum', { ...outbound, response_code: '200' })[0]!.value).toBeGreaterThan(3 * 100);
    expect(find(all, 'istio_requests_total', { reporter: 'destination' })).toEqual([]);
    noErrors();
  });

  it('requests into the app: reporter destination, the service of istiod\'s inbound cluster, plaintext (connection_security_policy none, source principal unknown)', async () => {
    for (let i = 0; i < 2; i++) expect((await send(pod.cluster, { url: `http://${POD_IP}:${APP_PORT}/inbound` })).status).toBe(200);
    expect((await send(pod.cluster, { url: `http://${POD_IP}:${APP_PORT}/inbound?status=404` })).status).toBe(404);
    const all = await scrapeCounting('destination', 3);
    const inbound = {
      reporter: 'destination',
      ...UNKNOWN_PEER('source'),
      source_principal: 'unknown',
      ...side('destination', FRONTEND),
      destination_principal: 'unknown',
      destination_service: FRONTEND_HOST,
      destination_service_name: 'frontend',
      destination_service_namespace: NS,
      request_protocol: 'http',
      connection_security_policy: 'none',
    };
    expect(find(all, 'istio_requests_total', { ...inbound, response_code: '200' }).map((s) => s.value)).toEqual([2]);
    expect(find(all, 'istio_requests_total', { ...inbound, response_code: '404' }).map((s) => s.value)).toEqual([1]);
    // the outbound counts stay as they were
    expect(find(all, 'istio_requests_total', { reporter: 'source', response_code: '200' }).map((s) => s.value)).toEqual([3]);
    noErrors();
  });

  it('label sets are bounded: an app answering with ever new codes fills the bound, the rest is counted in one overflow series', async () => {
    const before = (await scrape()).filter((s) => s.name === 'istio_requests_total');
    const codes = Array.from({ length: MAX_SERIES + 10 }, (_, i) => 210 + i);
    for (const code of codes) await send(pod.app(), { url: `http://${REVIEWS.vip}/any?status=${code}` });
    const all = await scrapeCounting('source', requestsCounted(before, 'source') + codes.length);
    const totals = all.filter((s) => s.name === 'istio_requests_total');
    // the bound's series and the overflow's, no more
    expect(totals.length).toBe(MAX_SERIES + 1);
    const overflow = find(totals, 'istio_requests_total', { reporter: 'source', response_code: 'unknown' });
    expect(overflow).toHaveLength(1);
    expect(overflow[0]!.labels).toMatchObject({ ...side('source', FRONTEND), destination_service: 'unknown' });
    const counted = totals.reduce((sum, s) => sum + s.value, 0) - before.reduce((sum, s) => sum + s.value, 0);
    expect(counted).toBe(codes.length);
    expect(overflow[0]!.value).toBe(codes.length - (MAX_SERIES - before.length));
    // what a series costs in the dict (APISIX's own gauges of it): 1000 of them must fit its 32 MiB with room for longer labels
    const dict = { name: 'apisix-mesh-istio-metrics' };
    const capacity = find(all, 'apisix_shared_dict_capacity_bytes', dict)[0]!.value;
    const used = capacity - find(all, 'apisix_shared_dict_free_space_bytes', dict)[0]!.value;
    console.log(`istio metrics dict: ${used} bytes used by ${totals.length} series (${Math.round(used / totals.length)} per series) of ${capacity}`);
    expect(capacity).toBe(32 * 1024 * 1024);
    expect((used / totals.length) * 1002).toBeLessThan(capacity);
    noErrors();
  });
});
