// Issue 14 (behave like Istio): load balancing as Envoy does it, on the real data plane — requests
// from the app in the injected pod, through the capture rules and the real APISIX, to echo servers
// in the cluster namespace; who answered is asserted, and APISIX's error log in every test.
// The translation and the Lua alone: test/agent/lb-semantics.test.ts.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingForPod, podManifest } from '../support/pod/requirements.js';
import { startPod, type RunningPod } from '../support/pod/pod-harness.js';
import { describeLines } from '../support/pod/apisix-log.js';
import { send, tally, type Answer } from '../support/echo-requests.js';
import {
  allowAnyVirtualHost, blackHoleCluster, edsCluster, fqdn, httpRoute, MeshResources, outboundCluster, outboundHttpListener,
  passthroughCluster, routeConfiguration, serviceVirtualHost, virtualOutbound, type ClusterOptions,
} from '../support/istio-xds.js';

const NS = 'test';
const PORT = 8080;

const services = {
  // consistentHash.httpCookie {name: user, path: /, ttl: 60s}
  sticky: { vip: '10.96.2.10', backends: [['sticky-a', '10.244.20.1'], ['sticky-b', '10.244.20.2'], ['sticky-c', '10.244.20.3']], options: { ringHash: true } },
  // consistentHash.httpHeaderName x-user, requests without the header
  keyless: { vip: '10.96.2.11', backends: [['keyless-a', '10.244.21.1'], ['keyless-b', '10.244.21.2'], ['keyless-c', '10.244.21.3']], options: { ringHash: true } },
} as const satisfies Record<string, { vip: string; backends: ReadonlyArray<readonly [string, string]>; options: ClusterOptions }>;
type Service = keyof typeof services;

const cluster = (service: Service) => outboundCluster(80, fqdn(service, NS));

function mesh(): MeshResources {
  const m = new MeshResources();
  for (const [service, def] of Object.entries(services) as Array<[Service, (typeof services)[Service]]>) {
    m.cluster(edsCluster(cluster(service), def.options), def.backends.map(([, ip]) => ({ ip, port: PORT, weight: 1 })));
  }
  const vhost = (service: Service, routes: Array<Record<string, unknown>>) => serviceVirtualHost(fqdn(service, NS), 80, services[service].vip, routes);
  m.route(
    routeConfiguration(80, [
      vhost('sticky', [httpRoute('sticky', { prefix: '/' }, { cluster: cluster('sticky'), hash_policy: [{ cookie: { name: 'user', path: '/', ttl: '60s' } }] })]),
      vhost('keyless', [httpRoute('keyless', { prefix: '/' }, { cluster: cluster('keyless'), hash_policy: [{ header: { header_name: 'x-user' } }] })]),
      allowAnyVirtualHost(),
    ]),
  );
  m.cluster(passthroughCluster()).cluster(blackHoleCluster());
  m.listener(outboundHttpListener(80)).listener(virtualOutbound());
  return m;
}

const backends: Array<readonly [string, string]> = Object.values(services).flatMap((s): ReadonlyArray<readonly [string, string]> => s.backends);

/** The generated cookie, as Envoy writes it: `user="<16 hex digits>"; Max-Age=60; Path=/; HttpOnly`. */
const SET_COOKIE = /^user="([0-9a-f]{16})"; Max-Age=60; Path=\/; HttpOnly$/;

describeWhenAvailable('load balancing as Envoy: consistent hashing', missingForPod(), () => {
  let pod: RunningPod;
  const noErrors = () => {
    const errors = pod.apisixErrors();
    expect(errors, describeLines(errors)).toEqual([]);
  };
  const get = (service: Service, headers: Record<string, string> = {}) => send(pod.app(), { url: `http://${services[service].vip}/`, headers });
  const many = (n: number, request: (i: number) => Promise<Answer>) => Promise.all(Array.from({ length: n }, (_, i) => request(i)));
  const setCookie = (a: Answer) => [a.headers['set-cookie'] ?? []].flat();

  beforeAll(async () => {
    pod = await startPod({
      manifest: podManifest('client', NS, { app: 'client' }),
      xds: mesh().resources,
      clusterAddresses: [...Object.values(services).map((s) => s.vip), ...backends.map(([, ip]) => ip)],
    });
    await pod.kubelet.waitReady(15_000);
    expect(await pod.waitSynced()).toBe(true);
    await Promise.all(backends.map(([name, ip]) => pod.cluster.serve(name, ip, PORT)));
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
});
