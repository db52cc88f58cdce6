// Issue: "The real data plane in the tests". The translation rules that act on the way to the
// upstream — mirror, fault injection, consistent hashing, retries, timeouts, traffic split, the
// circuit breaker — each exercised with real requests from the app in the injected pod, through the
// capture rules and the real APISIX, to echo servers in the cluster namespace; the behaviour is
// asserted (who got what, what the app got back), and APISIX's error log in every test.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingForPod, podManifest } from '../support/pod/requirements.js';
import { startPod, type RunningPod } from '../support/pod/pod-harness.js';
import { describeLines } from '../support/pod/apisix-log.js';
import { inTurnUntil, send, tally, type Answer } from '../support/echo-requests.js';
import {
  allowAnyVirtualHost, blackHoleCluster, edsCluster, faultFilterConfig, fqdn, httpRoute, istioDefaultRetries, MeshResources,
  outboundCluster, outboundHttpListener, passthroughCluster, routeConfiguration, serviceVirtualHost, virtualOutbound, type Endpoint,
} from '../support/istio-xds.js';

const NS = 'test';
const PORT = 8080; // every backend's port

/** Each service: its VIP, and its backends (echo servers named after them) by subset. */
const services = {
  mirror: { vip: '10.96.1.10', backends: { '': [['mirror-main', '10.244.10.1']] } },
  shadow: { vip: '10.96.1.11', backends: { '': [['shadow-endpoint', '10.244.10.2']] } },
  fault: { vip: '10.96.1.12', backends: { '': [['fault-backend', '10.244.11.1']] } },
  hash: { vip: '10.96.1.13', backends: { '': [['hash-a', '10.244.12.1'], ['hash-b', '10.244.12.2'], ['hash-c', '10.244.12.3']] } },
  // 10.244.13.1 exists in the cluster but nothing listens there: connections are refused
  retry: { vip: '10.96.1.14', backends: { '': [['refusing', '10.244.13.1'], ['retry-live', '10.244.13.2']] } },
  noretry: { vip: '10.96.1.15', backends: { '': [['refusing', '10.244.13.1'], ['retry-live', '10.244.13.2']] } },
  ejecting: { vip: '10.96.1.20', backends: { '': [['refusing', '10.244.13.1'], ['retry-live', '10.244.13.2']] } },
  slow: { vip: '10.96.1.16', backends: { '': [['slow', '10.244.14.1']] } },
  pertry: { vip: '10.96.1.19', backends: { '': [['slow-per-try', '10.244.14.2']] } },
  weighted: { vip: '10.96.1.21', backends: { '': [['w-heavy', '10.244.17.1'], ['w-light', '10.244.17.2']] } },
  split: { vip: '10.96.1.17', backends: { v1: [['split-v1', '10.244.15.1']], v2: [['split-v2', '10.244.15.2']] } },
  limited: { vip: '10.96.1.18', backends: { '': [['limited', '10.244.16.1']] } },
} as const satisfies Record<string, { vip: string; backends: Record<string, ReadonlyArray<readonly [string, string]>> }>;
type Service = keyof typeof services;

/** What kube-proxy would do for the shadow service's VIP: answer there (a mirror must not go there, but to the endpoints). */
const SHADOW_VIP_SERVER = 'shadow-vip';
const REFUSING = new Set(['refusing']);

const cluster = (service: Service, subset = '') => outboundCluster(80, fqdn(service, NS), subset);
/** Endpoint weights (load_balancing_weight); 1 unless named here. */
const WEIGHTS: Record<string, number> = { 'w-heavy': 3, 'w-light': 1 };
const endpoints = (service: Service, subset: string): Endpoint[] =>
  (services[service].backends as Record<string, ReadonlyArray<readonly [string, string]>>)[subset]!.map(([name, ip]) => ({ ip, port: PORT, weight: WEIGHTS[name] ?? 1 }));

function mesh(): MeshResources {
  const m = new MeshResources();
  for (const [service, def] of Object.entries(services) as Array<[Service, (typeof services)[Service]]>) {
    for (const subset of Object.keys(def.backends)) {
      const options = {
        hash: { ringHash: true },
        limited: { connectionPool: { maxConnections: 1, maxPendingRequests: 1 } },
        ejecting: { outlierDetection: { consecutive5xx: 2, interval: '1s', baseEjectionTime: '30s' } },
      }[service as string] ?? {};
      m.cluster(edsCluster(cluster(service, subset), options), endpoints(service, subset));
    }
  }
  const vhost = (service: Service, routes: Array<Record<string, unknown>>) => serviceVirtualHost(fqdn(service, NS), 80, services[service].vip, routes);
  const to = (service: Service, extra: Record<string, unknown> = {}) => ({ cluster: cluster(service), ...extra });
  m.route(
    routeConfiguration(80, [
      vhost('mirror', [httpRoute('mirrored', { prefix: '/' }, to('mirror', { request_mirror_policies: [{ cluster: cluster('shadow'), runtime_fraction: { default_value: { numerator: 1000000, denominator: 'MILLION' } } }] }))]),
      vhost('fault', [
        httpRoute('abort', { prefix: '/abort' }, to('fault'), { typed_per_filter_config: faultFilterConfig({ abort: { status: 418 } }) }),
        httpRoute('delay', { prefix: '/delay' }, to('fault'), { typed_per_filter_config: faultFilterConfig({ delay: { fixed: '0.4s' } }) }),
        httpRoute('half', { prefix: '/half' }, to('fault'), { typed_per_filter_config: faultFilterConfig({ abort: { status: 503, percent: 50 } }) }),
      ]),
      vhost('hash', [httpRoute('sticky', { prefix: '/' }, to('hash', { hash_policy: [{ header: { header_name: 'x-user' } }] }))]),
      vhost('retry', [httpRoute('retried', { prefix: '/' }, to('retry', { retry_policy: istioDefaultRetries(2) }))]),
      vhost('noretry', [httpRoute('once', { prefix: '/' }, to('noretry', { retry_policy: undefined }))]),
      vhost('ejecting', [httpRoute('once', { prefix: '/' }, to('ejecting', { retry_policy: undefined }))]),
      vhost('slow', [httpRoute('bounded', { prefix: '/' }, to('slow', { timeout: '0.5s' }))]),
      vhost('pertry', [httpRoute('per-try', { prefix: '/' }, to('pertry', { timeout: '3s', retry_policy: { retry_on: '5xx', num_retries: 1, per_try_timeout: '0.3s' } }))]),
      vhost('weighted', [httpRoute('spread', { prefix: '/' }, to('weighted'))]),
      vhost('split', [httpRoute('canary', { prefix: '/' }, { weighted_clusters: { clusters: [{ name: cluster('split', 'v1'), weight: 75 }, { name: cluster('split', 'v2'), weight: 25 }] } })]),
      vhost('limited', [httpRoute('guarded', { prefix: '/' }, to('limited'))]),
      allowAnyVirtualHost(),
    ]),
  );
  m.cluster(passthroughCluster()).cluster(blackHoleCluster());
  m.listener(outboundHttpListener(80)).listener(virtualOutbound());
  return m;
}

const backends = Object.values(services).flatMap((s) => Object.values(s.backends).flat());
const listening = [...new Map(backends.filter(([name]) => !REFUSING.has(name)).map(([name, ip]) => [name, ip])).entries()];

/**
 * APISIX error lines these tests cause on purpose, each explained (no other line is accepted):
 * - the refusing endpoint: nginx logs each refused connection to an upstream at [error];
 * - the slow backend: nginx logs an upstream read timeout at [error];
 * in a retry location (routes with a retry policy) nginx logs them without the request and
 * upstream parts (the only refused and timed-out upstreams here are the two above).
 */
const EXPLAINED = [
  /\[error\] .*connect\(\) failed \(111: Connection refused\) while connecting to upstream, .*upstream: "http:\/\/10\.244\.13\.1:8080\//,
  /\[error\] .*upstream timed out \(110: Connection timed out\) while reading response header from upstream, .*upstream: "http:\/\/10\.244\.14\.[12]:8080\//,
  // the same two, from the locations retries happen in (nginx names no request or upstream there)
  /\[error\] .*connect\(\) failed \(111: Connection refused\) while connecting to upstream, client: [\d.]+$/,
  /\[error\] .*upstream timed out \(110: Connection timed out\) while reading response header from upstream, client: [\d.]+$/,
];

describeWhenAvailable('translation rules on the real data plane: mirror, faults, hashing, retries, timeouts, split, limits', missingForPod(), () => {
  let pod: RunningPod;
  const app = () => pod.app();
  const noErrors = () => {
    const errors = pod.apisixErrors(EXPLAINED);
    expect(errors, describeLines(errors)).toEqual([]);
  };
  const get = (service: Service, path = '/', headers: Record<string, string> = {}) => send(app(), { url: `http://${services[service].vip}${path}`, headers });
  const many = (n: number, request: (i: number) => Promise<Answer>) => Promise.all(Array.from({ length: n }, (_, i) => request(i)));

  beforeAll(async () => {
    pod = await startPod({
      manifest: podManifest('client', NS, { app: 'client' }),
      xds: mesh().resources,
      clusterAddresses: [...Object.values(services).map((s) => s.vip), ...backends.map(([, ip]) => ip)],
      hosts: { [fqdn('shadow', NS)]: services.shadow.vip },
    });
    await pod.kubelet.waitReady(15_000);
    expect(await pod.waitSynced()).toBe(true);
    await Promise.all([
      ...listening.map(([name, ip]) => pod.cluster.serve(name, ip, PORT)),
      pod.cluster.serve(SHADOW_VIP_SERVER, services.shadow.vip, 80),
    ]);
  });
  afterAll(async () => {
    await pod?.stop();
  });

  it('mirror: the mirror cluster gets a copy (method, path, body) with the Host suffixed "-shadow", the app gets the main answer', async () => {
    const res = await send(app(), { url: `http://${services.mirror.vip}/orders?id=7`, method: 'POST', body: 'copy me', headers: { 'content-type': 'text/plain' } });
    expect(res.echo).toMatchObject({ name: 'mirror-main', method: 'POST', url: '/orders?id=7', body: 'copy me' });
    let shadow = await pod.cluster.served('shadow-endpoint');
    for (let i = 0; shadow.count === 0 && i < 50; i++) {
      await new Promise((r) => setTimeout(r, 50));
      shadow = await pod.cluster.served('shadow-endpoint');
    }
    expect(shadow.count).toBe(1);
    expect(shadow.requests[0]).toMatchObject({ method: 'POST', url: '/orders?id=7' });
    // as Envoy: to the mirror cluster's endpoints (not the service name), Host + "-shadow"
    expect((await pod.cluster.served(SHADOW_VIP_SERVER)).count).toBe(0);
    expect(shadow.requests[0]!.headers['host']).toBe(`${services.mirror.vip}-shadow`);
    noErrors();
  });

  it('fault: abort answers the status without the backend; delay holds the request, then forwards it', async () => {
    const before = (await pod.cluster.served('fault-backend')).count;
    const aborted = await get('fault', '/abort');
    expect([aborted.status, aborted.echo]).toEqual([418, undefined]);
    expect((await pod.cluster.served('fault-backend')).count).toBe(before);
    const started = Date.now();
    const delayed = await get('fault', '/delay');
    expect(Date.now() - started).toBeGreaterThanOrEqual(390); // the injected delay is the behaviour
    expect(delayed.echo?.name).toBe('fault-backend');
    noErrors();
  });

  it('fault: a 50 % abort aborts about half of the requests', async () => {
    const answers = await many(80, () => get('fault', '/half'));
    const aborted = answers.filter((a) => a.status === 503 && !a.echo).length;
    expect(answers.every((a) => a.status === 503 || a.echo?.name === 'fault-backend')).toBe(true);
    expect(aborted).toBeGreaterThan(15); // binomial(80, 0.5): outside 16..64 about once in 10^7 runs
    expect(aborted).toBeLessThan(65);
    noErrors();
  });

  it('consistent hashing on a header: one backend per value, and different values spread', async () => {
    for (const user of ['alice', 'bob']) {
      const answers = await many(8, () => get('hash', '/', { 'x-user': user }));
      expect(Object.keys(tally(answers))).toHaveLength(1);
    }
    const spread = await many(30, (i) => get('hash', '/', { 'x-user': `user-${i}` }));
    expect(Object.keys(tally(spread)).length).toBeGreaterThan(1);
    noErrors();
  });

  it('retries: with an endpoint refusing connections, every request succeeds on a retry', async () => {
    const answers = await many(10, () => get('retry'));
    expect(answers.map((a) => a.status)).toEqual(Array(10).fill(200));
    expect(tally(answers)).toEqual({ 'retry-live': 10 });
    noErrors();
  });

  it('control: without a retry policy, the requests sent to the refusing endpoint fail', async () => {
    const answers = await many(10, () => get('noretry'));
    const statuses = answers.map((a) => a.status);
    expect(statuses).toContain(502);
    expect(statuses).toContain(200);
    noErrors();
  });

  it('outlier detection: after consecutive failures the refusing endpoint is ejected', async () => {
    // hosts are drawn at random (Envoy's least request): requests go on until the refusing endpoint
    // has failed consecutive5xx (2) times, which 40 one-at-a-time requests all but surely bring
    const failures = (answers: Answer[]) => answers.filter((a) => a.status === 502).length;
    const early = await inTurnUntil(() => get('ejecting'), (answers) => failures(answers) === 2, 40);
    expect(failures(early)).toBe(2);
    const later: number[] = [];
    for (let i = 0; i < 10; i++) later.push((await get('ejecting')).status);
    expect(later).toEqual(Array(10).fill(200));
    noErrors();
  });

  it('timeout: a backend slower than the route timeout gives 504, a faster one 200', async () => {
    const before = (await pod.cluster.served('slow')).count;
    const late = await get('slow', '/?delay=1500');
    expect([late.status, late.echo]).toEqual([504, undefined]);
    // Envoy's route timeout bounds the request and all its retries, and Istio's default retry_on
    // has no timeouts: one try (nginx alone would retry the timed-out try twice more)
    expect((await pod.cluster.served('slow')).count - before).toBe(1);
    const fast = await get('slow', '/?delay=50');
    expect([fast.status, fast.echo?.name]).toEqual([200, 'slow']);
    noErrors();
  });

  it('retriable status codes: a 503 answer is retried as Istio\'s default policy says (1 + 2 tries), the last answer returned', async () => {
    const before = (await pod.cluster.served('slow')).count;
    const failed = await get('slow', '/?status=503');
    expect([failed.status, failed.echo?.name]).toEqual([503, 'slow']);
    expect((await pod.cluster.served('slow')).count - before).toBe(3);
    noErrors();
  });

  it('per-try timeout with retry_on 5xx: each try is cut at the per-try timeout and retried', async () => {
    const late = await get('pertry', '/?delay=1500');
    expect([late.status, late.echo]).toEqual([504, undefined]);
    expect((await pod.cluster.served('slow-per-try')).count).toBe(2);
    noErrors();
  });

  it('traffic split: weighted clusters share the requests in proportion', async () => {
    const answers = await many(100, () => get('split'));
    const counts = tally(answers);
    expect((counts['split-v1'] ?? 0) + (counts['split-v2'] ?? 0)).toBe(100);
    expect(counts['split-v1']).toBeGreaterThanOrEqual(60);
    expect(counts['split-v1']).toBeLessThanOrEqual(90);
    noErrors();
  });

  it('endpoint weights: hosts share a cluster\'s requests in proportion to their weights', async () => {
    // one at a time: Envoy's least request divides each weight by the host's requests in flight + 1,
    // so with 100 in flight at once 3:1 weights give ~63 %, not 75 % (least_request.lua)
    const answers: Answer[] = [];
    for (let i = 0; i < 200; i++) answers.push(await get('weighted'));
    const counts = tally(answers);
    expect((counts['w-heavy'] ?? 0) + (counts['w-light'] ?? 0)).toBe(200);
    // 150 expected; the binomial standard deviation is ~6.1, so the bounds are ±3.3 of it
    expect(counts['w-heavy']).toBeGreaterThanOrEqual(130);
    expect(counts['w-heavy']).toBeLessThanOrEqual(170);
    noErrors();
  });

  it('circuit breaker (connectionPool): one request in flight and one pending pass, the rest get 503', async () => {
    const answers = await many(4, () => get('limited', '/?delay=600'));
    const statuses = answers.map((a) => a.status).sort();
    expect(statuses).toEqual([200, 200, 503, 503]);
    noErrors();
  });
});
