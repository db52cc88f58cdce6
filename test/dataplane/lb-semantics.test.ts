// Issue 14 (behave like Istio): load balancing as Envoy does it, on the real data plane — requests
// from the app in the injected pod, through the capture rules and the real APISIX, to echo servers
// in the cluster namespace; who answered is asserted, and APISIX's error log in every test.
// The translation and the Lua alone: test/agent/lb-semantics.test.ts.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingForPod, podManifest } from '../support/pod/requirements.js';
import { startPod, type RunningPod } from '../support/pod/pod-harness.js';
import { describeLines } from '../support/pod/apisix-log.js';
import { inTurnUntil, send, tally, type Answer } from '../support/echo-requests.js';
import {
  allowAnyVirtualHost, blackHoleCluster, edsCluster, fqdn, httpRoute, istioDefaultRetries, MeshResources, outboundCluster, outboundHttpListener,
  passthroughCluster, routeConfiguration, serviceVirtualHost, virtualOutbound, type ClusterOptions,
} from '../support/istio-xds.js';

const NS = 'test';
const PORT = 8080;

const services = {
  // consistentHash.httpCookie {name: user, path: /, ttl: 60s}
  sticky: { vip: '10.96.2.10', backends: [['sticky-a', '10.244.20.1'], ['sticky-b', '10.244.20.2'], ['sticky-c', '10.244.20.3']], options: { ringHash: true } },
  // consistentHash.httpHeaderName x-user, requests without the header
  keyless: { vip: '10.96.2.11', backends: [['keyless-a', '10.244.21.1'], ['keyless-b', '10.244.21.2'], ['keyless-c', '10.244.21.3']], options: { ringHash: true } },
  // outlierDetection as Istio's circuit-breaking example has it, with consecutive5xxErrors 2 and 30 s
  ejecting: { vip: '10.96.2.12', backends: [['od-ok', '10.244.22.1'], ['od-bad', '10.244.22.2']], options: {} },
  // maxEjectionPercent 50 of three hosts, two of them failing
  capped: { vip: '10.96.2.13', backends: [['cap-ok', '10.244.23.1'], ['cap-bad1', '10.244.23.2'], ['cap-bad2', '10.244.23.3']], options: {} },
  // consecutive5xxErrors 5 and consecutiveGatewayErrors 2
  gateway: { vip: '10.96.2.14', backends: [['gw-ok', '10.244.24.1'], ['gw-bad', '10.244.24.2']], options: {} },
  // retries (docs/http-semantics.md): one host answers an invalid header (Envoy: a protocol error, a reset)
  resetting: { vip: '10.96.2.15', backends: [['garbage', '10.244.25.1'], ['reset-live', '10.244.25.2']], options: {} },
  // the same, one host only: Envoy retries it once previous_hosts has rejected it 5 times
  lonely: { vip: '10.96.2.16', backends: [['lonely', '10.244.26.1']], options: {} },
  // retries on 5xx over two hosts, both failing: more tries than hosts
  pair: { vip: '10.96.2.17', backends: [['pair-a', '10.244.27.1'], ['pair-b', '10.244.27.2']], options: {} },
} as const satisfies Record<string, { vip: string; backends: ReadonlyArray<readonly [string, string]>; options: ClusterOptions }>;
type Service = keyof typeof services;

const cluster = (service: Service) => outboundCluster(80, fqdn(service, NS));

/** Each cluster's outlier_detection, as istiod writes a DestinationRule's outlierDetection. */
const OUTLIER: Partial<Record<Service, Record<string, unknown>>> = {
  ejecting: { consecutive_5xx: 2, interval: '1s', base_ejection_time: '30s', max_ejection_percent: 100, enforcing_consecutive_5xx: 100, enforcing_success_rate: 0 },
  capped: { consecutive_5xx: 2, interval: '1s', base_ejection_time: '30s', max_ejection_percent: 50, enforcing_consecutive_5xx: 100, enforcing_success_rate: 0 },
  gateway: {
    consecutive_5xx: 5, consecutive_gateway_failure: 2, enforcing_consecutive_gateway_failure: 100, interval: '1s', base_ejection_time: '30s',
    max_ejection_percent: 100, enforcing_consecutive_5xx: 100, enforcing_success_rate: 0,
  },
};

/** retry_on as istiod writes a VirtualService's `retries` (with Istio's host predicate). */
const retriesOn = (retryOn: string, attempts: number) => {
  const { retriable_status_codes: _, ...policy } = istioDefaultRetries(attempts);
  return { ...policy, retry_on: retryOn };
};

function mesh(): MeshResources {
  const m = new MeshResources();
  for (const [service, def] of Object.entries(services) as Array<[Service, (typeof services)[Service]]>) {
    const c = edsCluster(cluster(service), def.options);
    const od = OUTLIER[service];
    if (od) {
      c['outlier_detection'] = od;
      c['common_lb_config'] = { healthy_panic_threshold: {} }; // Istio's minHealthPercent 0
    }
    m.cluster(c, def.backends.map(([, ip]) => ({ ip, port: PORT, weight: 1 })));
  }
  const vhost = (service: Service, routes: Array<Record<string, unknown>>) => serviceVirtualHost(fqdn(service, NS), 80, services[service].vip, routes);
  m.route(
    routeConfiguration(80, [
      vhost('sticky', [httpRoute('sticky', { prefix: '/' }, { cluster: cluster('sticky'), hash_policy: [{ cookie: { name: 'user', path: '/', ttl: '60s' } }] })]),
      vhost('keyless', [httpRoute('keyless', { prefix: '/' }, { cluster: cluster('keyless'), hash_policy: [{ header: { header_name: 'x-user' } }] })]),
      vhost('resetting', [
        httpRoute('reset', { prefix: '/reset' }, { cluster: cluster('resetting'), retry_policy: { retry_on: 'reset', num_retries: 1 } }),
        httpRoute('connect', { prefix: '/connect' }, { cluster: cluster('resetting'), retry_policy: { retry_on: 'connect-failure', num_retries: 1 } }),
      ]),
      vhost('lonely', [httpRoute('lonely', { prefix: '/' }, { cluster: cluster('lonely'), retry_policy: retriesOn('reset', 2) })]),
      vhost('pair', [httpRoute('pair', { prefix: '/' }, { cluster: cluster('pair'), retry_policy: retriesOn('5xx', 2) })]),
      ...(['ejecting', 'capped', 'gateway'] as const).map((service) => vhost(service, [httpRoute(service, { prefix: '/' }, { cluster: cluster(service), retry_policy: undefined })])),
      allowAnyVirtualHost(),
    ]),
  );
  m.cluster(passthroughCluster()).cluster(blackHoleCluster());
  m.listener(outboundHttpListener(80)).listener(virtualOutbound());
  return m;
}

const backends: Array<readonly [string, string]> = Object.values(services).flatMap((s): ReadonlyArray<readonly [string, string]> => s.backends);
const TCP_ECHO = new Set(['garbage', 'lonely']);

/** A status line, then a header name with a NUL: nginx and Envoy both refuse the answer. */
const INVALID_ANSWER = 'HTTP/1.1 200 OK\r\nX\u0000Y: 1\r\n\r\n';
/** APISIX error lines caused on purpose: the garbage hosts' answers (nginx names no request or upstream in a retry location). */
const INVALID_HEADER = /\[error\] \d+#\d+: \*(\d+) upstream sent invalid header: .* while reading response header from upstream, client: [\d.]+(, .*upstream: "http:\/\/10\.244\.2[56]\.1:8080\/.*)?$/;
const EXPLAINED = [INVALID_HEADER];

/** The generated cookie, as Envoy writes it: `user="<16 hex digits>"; Max-Age=60; Path=/; HttpOnly`. */
const SET_COOKIE = /^user="([0-9a-f]{16})"; Max-Age=60; Path=\/; HttpOnly$/;

describeWhenAvailable('load balancing as Envoy: consistent hashing, outlier detection', missingForPod(), () => {
  let pod: RunningPod;
  const noErrors = () => {
    const errors = pod.apisixErrors(EXPLAINED);
    expect(errors, describeLines(errors)).toEqual([]);
  };
  const get = (service: Service, headers: Record<string, string> = {}, path = '/') => send(pod.app(), { url: `http://${services[service].vip}${path}`, headers });
  /** `n` requests one after the other (each try's answer counts before the next request is picked) */
  const inTurn = async (n: number, request: () => Promise<Answer>) => {
    const out: Answer[] = [];
    for (let i = 0; i < n; i++) out.push(await request());
    return out;
  };
  const many = (n: number, request: (i: number) => Promise<Answer>) => Promise.all(Array.from({ length: n }, (_, i) => request(i)));
  const setCookie = (a: Answer) => [a.headers['set-cookie'] ?? []].flat();
  /** where APISIX's log is now; `newLines(mark)`: its lines written since */
  const logMark = () => pod.apisixLog().length;
  const newLines = (mark = 0) => pod.apisixLog().slice(mark).split('\n').filter(Boolean);
  const tallyBy = (keys: string[]) => keys.reduce<Record<string, number>>((t, k) => ({ ...t, [k]: (t[k] ?? 0) + 1 }), {});

  beforeAll(async () => {
    pod = await startPod({
      manifest: podManifest('client', NS, { app: 'client' }),
      xds: mesh().resources,
      clusterAddresses: [...Object.values(services).map((s) => s.vip), ...backends.map(([, ip]) => ip)],
    });
    await pod.kubelet.waitReady(15_000);
    expect(await pod.waitSynced()).toBe(true);
    await Promise.all(backends.map(([name, ip]) => (TCP_ECHO.has(name) ? pod.cluster.serveTcp(name, ip, PORT, { banner: INVALID_ANSWER }) : pod.cluster.serve(name, ip, PORT))));
  });
  afterAll(async () => {
    await pod?.stop();
  });

  it('a cookie policy with a ttl: a request without the cookie gets one (Envoy\'s form), and with it sticks to the host that answered', async () => {
    const first = await get('sticky');
    expect(first.status).toBe(200);
    const cookies = setCookie(first);
    expect(cookies).toHaveLength(1);
    const value = SET_COOKIE.exec(cookies[0]!)?.[1];
    expect(value, cookies[0]).toBeDefined();
    // the client sends it back as it was set (quoted), and stays with the host of its first request
    const again = await many(10, () => get('sticky', { cookie: `user="${value}"` }));
    expect(tally(again)).toEqual({ [first.echo!.name]: 10 });
    expect(again.flatMap(setCookie)).toEqual([]);
    noErrors();
  });

  it('a cookie policy with a ttl: clients without the cookie (each its own connection) get their own cookies, spread over the hosts', async () => {
    const firsts = await many(24, () => get('sticky'));
    const values = new Set(firsts.map((a) => SET_COOKIE.exec(setCookie(a)[0] ?? '')?.[1]));
    expect(values.has(undefined)).toBe(false);
    expect(values.size).toBe(24);
    expect(Object.keys(tally(firsts)).length).toBeGreaterThan(1); // all on one of three: (1/3)^23 ≈ 1e-11
    noErrors();
  });

  it('no usable hash key: requests are spread as Envoy spreads them (random host), not all sent to the host of the app\'s address', async () => {
    const answers = await many(24, () => get('keyless'));
    expect(answers.map((a) => a.status)).toEqual(Array(24).fill(200));
    expect(Object.keys(tally(answers)).length).toBeGreaterThan(1);
    expect(answers.flatMap(setCookie)).toEqual([]);
    noErrors();
  });

  it('outlier detection: a host answering 503 is ejected after consecutive5xxErrors and stays out for baseEjectionTime (APISIX\'s TCP check took it back after one interval)', async () => {
    const failing = () => get('ejecting', {}, '/?status.od-bad=503');
    // hosts are drawn at random: until the bad host has failed twice (40 requests all but surely do it)
    const early = await inTurnUntil(failing, (answers) => answers.filter((a) => a.status === 503).length === 2, 40);
    expect(early.filter((a) => a.status === 503).map((a) => a.echo?.name)).toEqual(['od-bad', 'od-bad']);
    // more than two intervals (1 s) later it is still out
    await new Promise((r) => setTimeout(r, 2500));
    const later = await inTurn(12, failing);
    expect(tally(later)).toEqual({ 'od-ok': 12 });
    noErrors();
  });

  it('outlier detection: no more hosts ejected at once than maxEjectionPercent allows (one of three at 50 %), the other failing host keeps its share', async () => {
    const failing = () => get('capped', {}, '/?status.cap-bad1=503&status.cap-bad2=503');
    await inTurn(12, failing);
    const later = tally(await inTurn(15, failing));
    const bad = Object.keys(later).filter((name) => name.startsWith('cap-bad'));
    expect(bad, JSON.stringify(later)).toHaveLength(1);
    expect(later['cap-ok']).toBeGreaterThan(0);
    noErrors();
  });

  it('outlier detection: consecutive gateway errors (502) eject after consecutiveGatewayErrors (2), before consecutive5xxErrors (5) would', async () => {
    const failing = () => get('gateway', {}, '/?status.gw-bad=502');
    const early = await inTurnUntil(failing, (answers) => answers.filter((a) => a.status === 502).length === 2, 40);
    expect(early.filter((a) => a.status === 502).map((a) => a.echo?.name)).toEqual(['gw-bad', 'gw-bad']);
    expect(tally(await inTurn(8, failing))).toEqual({ 'gw-ok': 8 });
    noErrors();
  });

  it('retries still as documented: retry_on reset retries a try that connected but got no valid answer, on the other host; connect-failure does not', async () => {
    const reset = await inTurn(10, () => get('resetting', {}, '/reset'));
    expect(reset.map((a) => a.status), describeLines(newLines().filter((l) => /\[(error|warn)\]/.test(l)).slice(-12), 12)).toEqual(Array(10).fill(200));
    expect(tally(reset)).toEqual({ 'reset-live': 10 });
    const both = (answers: Answer[]) => answers.some((a) => a.status === 502) && answers.some((a) => a.status === 200);
    const connect = (await inTurnUntil(() => get('resetting', {}, '/connect'), both, 40)).map((a) => a.status);
    expect(connect).toContain(502);
    expect(connect).toContain(200);
    noErrors();
  });

  // The garbage host speaks first (its answer is there on connect). When nginx reads it before it has
  // sent the request, it does not reset its response buffer and parser for the next try (it does
  // that only for a try whose request went out), so the retry — on the other host — read the failed
  // host's bytes again and failed as it had: it looked as if the retry had gone back to the host that
  // just failed. Whether nginx reads before it writes depends on its event loop: more likely with
  // traffic going on, hence the warm-up and the concurrent requests (on main's code, requests
  // failed with two invalid-header errors each).
  it('after other traffic, a try that failed on a host that spoke first is retried on the other host, cleanly, in every request', async () => {
    const mark = logMark();
    const warmUp = [
      ...Array.from({ length: 6 }, () => get('sticky')),
      ...Array.from({ length: 6 }, (_, i) => get('keyless', { 'x-user': `u${i}` })),
      ...Array.from({ length: 6 }, () => get('keyless')),
      ...Array.from({ length: 6 }, () => get('ejecting')),
    ];
    await Promise.all(warmUp);
    const answers: Answer[] = [];
    // every other request a POST: Envoy retries it, its body goes out again in the new upstream request
    const body = (i: number) => `payload ${i} `.repeat(200);
    const request = (i: number) => (i % 2 ? send(pod.app(), { url: `http://${services.resetting.vip}/reset`, method: 'POST', body: body(i) }) : get('resetting', {}, '/reset'));
    for (let batch = 0; batch < 12; batch++) answers.push(...(await many(10, request)));
    const failed = newLines(mark).filter((l) => INVALID_HEADER.test(l));
    expect(answers.map((a) => a.status), describeLines(failed, 12)).toEqual(Array(120).fill(200));
    expect(tally(answers)).toEqual({ 'reset-live': 120 });
    expect(answers.map((a, i) => (i % 10) % 2 ? a.echo?.body === body(i % 10) && a.echo.method === 'POST' : a.echo?.method === 'GET')).toEqual(Array(120).fill(true));
    // one failed try per request at most: each request came on its own connection (its number in the log)
    const perConnection = tallyBy(failed.map((l) => INVALID_HEADER.exec(l)![1]!));
    expect(Object.entries(perConnection).filter(([, n]) => n > 1), describeLines(failed, 12)).toEqual([]);
    noErrors();
  });

  it('two retries over two failing hosts: the second retry, with no host left untried, goes to a host again (not 502 for lack of hosts)', async () => {
    const served = async () => [(await pod.cluster.served('pair-a')).count, (await pod.cluster.served('pair-b')).count] as const;
    const [a0, b0] = await served();
    const answers = await inTurn(4, () => get('pair', {}, '/?status=503'));
    expect(answers.map((a) => a.status)).toEqual(Array(4).fill(503));
    expect(answers.every((a) => a.echo?.name.startsWith('pair-'))).toBe(true); // the last try's answer, not nginx's 502
    // three tries each: the first retry on the other host (A B A or B A B), so each host at least once per request
    const [a1, b1] = await served();
    expect(a1 - a0 + (b1 - b0)).toBe(12);
    expect(Math.min(a1 - a0, b1 - b0)).toBeGreaterThanOrEqual(4);
    noErrors();
  });

  it('a single host: the retries go to that host again, as Envoy once previous_hosts has rejected it host_selection_retry_max_attempts times', async () => {
    const before = (await pod.cluster.served('lonely')).count;
    const mark = logMark();
    const answers = await inTurn(4, () => get('lonely'));
    expect(answers.map((a) => a.status)).toEqual(Array(4).fill(502));
    // num_retries 2: three tries of each request, all on the one host
    expect((await pod.cluster.served('lonely')).count - before).toBe(12);
    expect(newLines(mark).filter((l) => INVALID_HEADER.test(l))).toHaveLength(12);
    noErrors();
  });
});
