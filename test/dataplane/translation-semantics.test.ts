// Issue "Istio fidelity": Envoy's HTTP semantics beyond routing, each exercised with real requests
// from the app in the injected pod, through the capture rules and the real APISIX, to echo servers
// in the cluster namespace: path rewrites (every regex match, prefix rewrites after any match kind),
// fault percentages below 1 % and gRPC aborts, x-request-id and trace headers, CORS and response
// header mutations, mirroring, retries on Envoy's conditions.
// What the backend got and what the app got back are asserted, and APISIX's error log in every test.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingForPod, podManifest } from '../support/pod/requirements.js';
import { startPod, type RunningPod } from '../support/pod/pod-harness.js';
import { describeLines } from '../support/pod/apisix-log.js';
import { send } from '../support/echo-requests.js';
import { POD_IP } from '../support/pod/network.js';
import {
  allowAnyVirtualHost, blackHoleCluster, edsCluster, faultFilterConfig, fqdn, httpRoute, inboundCluster, inboundPassthroughCluster, istioDefaultRetries, MeshResources,
  outboundCluster, outboundHttpListener, passthroughCluster, routeConfiguration, serviceVirtualHost, virtualInbound, virtualOutbound,
} from '../support/istio-xds.js';

const NS = 'test';
const PORT = 8080; // every backend's port
const APP_PORT = 8080; // the app in the pod (inbound)

/** Each service: its VIP and its one backend (an echo server named after it). */
const services = {
  rewrite: { vip: '10.96.2.10', backend: ['rewritten', '10.244.20.1'] },
  fault: { vip: '10.96.2.11', backend: ['faulty', '10.244.21.1'] },
  ids: { vip: '10.96.2.12', backend: ['ids', '10.244.22.1'] },
  cors: { vip: '10.96.2.13', backend: ['cors-backend', '10.244.23.1'] },
  mirrored: { vip: '10.96.2.14', backend: ['mirrored-main', '10.244.24.1'] },
} as const satisfies Record<string, { vip: string; backend: readonly [string, string] }>;
type Service = keyof typeof services;

const cluster = (service: Service) => outboundCluster(80, fqdn(service, NS));
/** The shadow service of the mirror test: two subsets, the mirror goes to v2 */
const SHADOW = { v1: ['shadow-v1', '10.244.25.1'], v2: ['shadow-v2', '10.244.25.2'] } as const;
/** The retry service: two endpoints, answering what the request's `status=` asks for */
const RETRYING = { vip: '10.96.2.15', endpoints: [['retry-a', '10.244.26.1'], ['retry-b', '10.244.26.2']] } as const;
const retryCluster = outboundCluster(80, fqdn('retrying', NS));
/** An address outside the mesh, reached through the PassthroughCluster by a route with a retry policy */
const EXTERNAL = ['external', '10.66.7.8'] as const;
const shadowCluster = (subset: keyof typeof SHADOW) => outboundCluster(80, fqdn('shadow', NS), subset);

function mesh(): MeshResources {
  const m = new MeshResources();
  for (const [service, def] of Object.entries(services) as Array<[Service, (typeof services)[Service]]>) {
    m.cluster(edsCluster(cluster(service)), [{ ip: def.backend[1], port: PORT }]);
  }
  for (const subset of ['v1', 'v2'] as const) m.cluster(edsCluster(shadowCluster(subset)), [{ ip: SHADOW[subset][1], port: PORT }]);
  m.cluster(edsCluster(retryCluster), RETRYING.endpoints.map(([, ip]) => ({ ip, port: PORT })));
  const vhost = (service: Service, routes: Array<Record<string, unknown>>) => serviceVirtualHost(fqdn(service, NS), 80, services[service].vip, routes);
  const to = (service: Service, extra: Record<string, unknown> = {}) => ({ cluster: cluster(service), ...extra });
  m.route(
    routeConfiguration(80, [
      vhost('rewrite', [
        httpRoute('every-match', { prefix: '/g/' }, to('rewrite', { regex_rewrite: { pattern: { regex: '-' }, substitution: '_' } })),
        httpRoute('after-regex', { safe_regex: { regex: '/re/[a-z]+/.*' } }, to('rewrite', { prefix_rewrite: '/whole' })),
        httpRoute('caseless', { prefix: '/CI/', case_sensitive: false }, to('rewrite', { prefix_rewrite: '/ci-new/' })),
        httpRoute('separated', { path_separated_prefix: '/sep' }, to('rewrite', { prefix_rewrite: '/joined' })),
      ]),
      vhost('fault', [
        // 0.4 %: Istio writes 4000 per million; a whole-percent sampler would make it 0 %
        httpRoute('rare', { prefix: '/rare' }, to('fault'), { typed_per_filter_config: faultFilterConfig({ abort: { status: 503, percent: 0.4 } }) }),
        httpRoute('grpc', { prefix: '/grpc' }, to('fault'), { typed_per_filter_config: faultFilterConfig({ abort: { grpcStatus: 14 } }) }),
      ]),
      vhost('ids', [httpRoute('plain', { prefix: '/' }, to('ids'))]),
      {
        ...vhost('cors', [
          httpRoute('with-headers', { prefix: '/' }, to('cors'), {
            response_headers_to_add: [
              { header: { key: 'x-level', value: 'route' }, append_action: 'OVERWRITE_IF_EXISTS_OR_ADD' },
              { header: { key: 'x-served-by', value: 'mesh' }, append_action: 'APPEND_IF_EXISTS_OR_ADD' },
              { header: { key: 'content-type', value: 'text/plain' }, append_action: 'ADD_IF_ABSENT' },
              { header: { key: 'x-default', value: 'd' }, append_action: 'ADD_IF_ABSENT' },
              { header: { key: 'x-only-if-there', value: 'o' }, append_action: 'OVERWRITE_IF_EXISTS' },
              { header: { key: 'x-link', value: 'http://a.example/$path' }, append_action: 'OVERWRITE_IF_EXISTS_OR_ADD' },
            ],
          }),
        ]),
        // the virtual host's mutations run after the route's: its x-level wins (Envoy)
        response_headers_to_add: [{ header: { key: 'x-level', value: 'vhost' }, append_action: 'OVERWRITE_IF_EXISTS_OR_ADD' }],
        typed_per_filter_config: {
          'envoy.filters.http.cors': {
            '@type': 'type.googleapis.com/envoy.config.route.v3.CorsPolicy',
            allow_origin_string_match: [{ exact: 'https://app.example' }],
            allow_methods: 'GET,POST', allow_headers: 'x-a', expose_headers: 'x-total', max_age: '600', allow_credentials: true,
          },
        },
      },
      vhost('mirrored', [
        httpRoute('half', { prefix: '/half' }, to('mirrored', { request_mirror_policies: [{ cluster: shadowCluster('v2'), runtime_fraction: { default_value: { numerator: 50 } } }] })),
        httpRoute('all', { prefix: '/' }, to('mirrored', { request_mirror_policies: [{ cluster: shadowCluster('v2') }] })),
      ]),
      serviceVirtualHost(fqdn('retrying', NS), 80, RETRYING.vip, [
        httpRoute('istio-default', { prefix: '/default' }, { cluster: retryCluster, retry_policy: istioDefaultRetries(2) }),
        httpRoute('five-xx', { prefix: '/5xx' }, { cluster: retryCluster, retry_policy: { retry_on: '5xx', num_retries: 2 } }),
        httpRoute('gateway', { prefix: '/gateway' }, { cluster: retryCluster, retry_policy: { retry_on: 'gateway-error', num_retries: 2 } }),
      ]),
      {
        name: `${EXTERNAL[1]}:80`,
        domains: [EXTERNAL[1]],
        routes: [httpRoute('outside', { prefix: '/' }, { cluster: 'PassthroughCluster', retry_policy: istioDefaultRetries(2), request_mirror_policies: [{ cluster: shadowCluster('v1') }] })],
      },
      allowAnyVirtualHost(),
    ]),
  );
  m.cluster(passthroughCluster()).cluster(blackHoleCluster()).cluster(inboundPassthroughCluster()).cluster(inboundCluster(APP_PORT));
  m.listener(outboundHttpListener(80)).listener(virtualOutbound());
  m.listener(virtualInbound([{ port: APP_PORT, service: fqdn('client', NS) }]));
  return m;
}

describeWhenAvailable('Envoy\'s HTTP semantics on the real data plane: rewrites, faults, request ids, CORS, response headers, mirrors, retries', missingForPod(), () => {
  let pod: RunningPod;
  const app = () => pod.app();
  const noErrors = (explained: RegExp[] = []) => {
    const errors = pod.apisixErrors(explained);
    expect(errors, describeLines(errors)).toEqual([]);
  };
  const get = (service: Service, path = '/', headers: Record<string, string> = {}, method = 'GET') => send(app(), { url: `http://${services[service].vip}${path}`, headers, method });

  beforeAll(async () => {
    pod = await startPod({
      manifest: podManifest('client', NS, { app: 'client' }),
      xds: mesh().resources,
      clusterAddresses: [...Object.values(services).flatMap((s) => [s.vip, s.backend[1]]), ...Object.values(SHADOW).map(([, ip]) => ip), RETRYING.vip, ...RETRYING.endpoints.map(([, ip]) => ip), EXTERNAL[1]],
    });
    await pod.kubelet.waitReady(15_000);
    expect(await pod.waitSynced()).toBe(true);
    await Promise.all([
      ...Object.values(services).map((s) => pod.cluster.serve(s.backend[0], s.backend[1], PORT)),
      ...Object.values(SHADOW).map(([name, ip]) => pod.cluster.serve(name, ip, PORT)),
      ...RETRYING.endpoints.map(([name, ip]) => pod.cluster.serve(name, ip, PORT)),
      pod.cluster.serve(EXTERNAL[0], EXTERNAL[1], 80),
      app().serve('app', '0.0.0.0', APP_PORT),
    ]);
  });
  afterAll(async () => {
    await pod?.stop();
  });

  it('rewrites: regex_rewrite replaces every match; prefix_rewrite after a regex, caseless or separated-prefix match', async () => {
    const url = async (path: string) => (await get('rewrite', path)).echo?.url;
    expect(await url('/g/a-b-c?x=a-b')).toBe('/g/a_b_c?x=a-b'); // the query is not rewritten
    expect(await url('/re/abc/d/e?q=1')).toBe('/whole?q=1');
    expect(await url('/ci/rest')).toBe('/ci-new/rest');
    expect(await url('/Ci/rest')).toBe('/ci-new/rest');
    expect(await url('/sep/x')).toBe('/joined/x');
    expect(await url('/sep')).toBe('/joined');
    noErrors();
  });

  it('fault: a 0.4 % abort aborts about 0.4 % of the requests (not 0 %, not 1 %)', async () => {
    let aborted = 0;
    let forwarded = 0;
    for (let batch = 0; batch < 30; batch++) {
      const answers = await Promise.all(Array.from({ length: 100 }, () => get('fault', '/rare')));
      for (const a of answers) {
        if (a.status === 503 && !a.echo) aborted++;
        else if (a.echo?.name === 'faulty') forwarded++;
      }
    }
    expect(aborted + forwarded).toBe(3000);
    // binomial(3000, 0.004): mean 12; 0 has odds 6e-6, more than 35 about 1e-8
    expect(aborted).toBeGreaterThan(0);
    expect(aborted).toBeLessThanOrEqual(35);
    noErrors();
  });

  it('fault: a gRPC abort answers HTTP 200 with grpc-status and no body, as Envoy\'s local reply to gRPC', async () => {
    const before = (await pod.cluster.served('faulty')).count;
    const res = await get('fault', '/grpc/svc.Method', { 'content-type': 'application/grpc', te: 'trailers' }, 'POST');
    expect([res.status, res.echo]).toEqual([200, undefined]);
    expect(res.headers['grpc-status']).toBe('14');
    expect(res.headers['grpc-message']).toBe('fault filter abort');
    expect(res.headers['content-type']).toBe('application/grpc');
    expect(res.body).toBe('');
    expect((await pod.cluster.served('faulty')).count).toBe(before);
    noErrors();
  });

  it('x-request-id: generated (a UUID) when absent, kept when present, outbound and inbound; trace headers pass untouched', async () => {
    const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
    const seen = async (headers: Record<string, string> = {}) => (await get('ids', '/', headers)).echo!.headers;
    const [first, second] = [await seen(), await seen()];
    expect(first['x-request-id']).toMatch(UUID);
    expect(second['x-request-id']).toMatch(UUID);
    expect(first['x-request-id']).not.toBe(second['x-request-id']);
    expect((await seen({ 'x-request-id': 'from-the-app-1' }))['x-request-id']).toBe('from-the-app-1');
    const trace = {
      traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
      tracestate: 'congo=t61rcWkgMzE',
      b3: '80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90',
      'x-b3-traceid': '80f198ee56343ba864fe8b2a57d3eff7',
      'x-b3-spanid': 'e457b5a2e4d86bd1',
      'x-b3-parentspanid': '05e3ac9a4f6e3b90',
      'x-b3-sampled': '1',
    };
    const traced = await seen({ ...trace, 'x-request-id': 'traced-1' });
    for (const [name, value] of Object.entries(trace)) expect(traced[name], name).toBe(value);
    expect(traced['x-request-id']).toBe('traced-1');
    // inbound: a request from the cluster to the app in the pod
    const inbound = await send(pod.cluster, { url: `http://${POD_IP}:${APP_PORT}/in` });
    expect(inbound.echo?.name).toBe('app');
    expect(inbound.echo!.headers['x-request-id']).toMatch(UUID);
    const kept = await send(pod.cluster, { url: `http://${POD_IP}:${APP_PORT}/in`, headers: { 'x-request-id': 'from-a-client' } });
    expect(kept.echo!.headers['x-request-id']).toBe('from-a-client');
    noErrors();
  });

  it('CORS: a preflight from an allowed origin is answered by the proxy; other origins and actual requests go on, with Envoy\'s headers', async () => {
    const before = (await pod.cluster.served('cors-backend')).count;
    const preflight = { 'access-control-request-method': 'POST', 'access-control-request-headers': 'x-a' };
    const answered = await get('cors', '/items', { origin: 'https://app.example', ...preflight }, 'OPTIONS');
    expect([answered.status, answered.echo]).toEqual([200, undefined]);
    expect(answered.headers).toMatchObject({
      'access-control-allow-origin': 'https://app.example', 'access-control-allow-methods': 'GET,POST', 'access-control-allow-headers': 'x-a',
      'access-control-max-age': '600', 'access-control-allow-credentials': 'true',
    });
    expect((await pod.cluster.served('cors-backend')).count).toBe(before);
    const foreign = await get('cors', '/items', { origin: 'https://evil.example', ...preflight }, 'OPTIONS');
    expect(foreign.echo).toMatchObject({ name: 'cors-backend', method: 'OPTIONS' });
    expect(foreign.headers['access-control-allow-origin']).toBeUndefined();
    const actual = await get('cors', '/items', { origin: 'https://app.example' });
    expect(actual.echo?.name).toBe('cors-backend');
    expect(actual.headers).toMatchObject({ 'access-control-allow-origin': 'https://app.example', 'access-control-allow-credentials': 'true', 'access-control-expose-headers': 'x-total' });
    expect(actual.headers['access-control-allow-methods']).toBeUndefined(); // preflight-only, as in Envoy
    const other = await get('cors', '/items', { origin: 'https://evil.example' });
    expect(other.headers['access-control-allow-origin']).toBeUndefined();
    noErrors();
  });

  it('response headers: route then virtual host (the less specific wins), with Envoy\'s four append actions, values literal', async () => {
    const res = await get('cors', '/any');
    expect(res.echo?.name).toBe('cors-backend');
    expect(res.headers['x-level']).toBe('vhost');
    expect(res.headers['x-served-by']).toBe('cors-backend, mesh'); // appended as a second line
    expect(res.headers['content-type']).toBe('application/json'); // ADD_IF_ABSENT: it was there
    expect(res.headers['x-default']).toBe('d');
    expect(res.headers['x-only-if-there']).toBeUndefined(); // OVERWRITE_IF_EXISTS: it was not
    expect(res.headers['x-link']).toBe('http://a.example/$path');
    noErrors();
  });

  it('mirror: the copy goes to the mirror cluster\'s subset endpoints with "-shadow" added to the Host, after the rewrites', async () => {
    const served = async (name: string) => (await pod.cluster.served(name)).requests;
    const shadowCopies = async (count: number) => {
      let copies = await served('shadow-v2');
      for (let i = 0; copies.length < count && i < 50; i++) {
        await new Promise((r) => setTimeout(r, 50));
        copies = await served('shadow-v2');
      }
      return copies;
    };
    const res = await send(app(), { url: `http://${services.mirrored.vip}/orders?id=7`, method: 'POST', body: 'copy me', headers: { 'content-type': 'text/plain', host: 'mirrored.test:80', 'x-request-id': 'mirror-1' } });
    expect(res.echo).toMatchObject({ name: 'mirrored-main', method: 'POST', url: '/orders?id=7', body: 'copy me' });
    const [copy] = await shadowCopies(1);
    expect(copy).toMatchObject({ method: 'POST', url: '/orders?id=7' });
    expect(copy!.headers['host']).toBe('mirrored.test-shadow:80');
    expect(copy!.headers['x-request-id']).toBe('mirror-1');
    expect(copy!.headers['content-type']).toBe('text/plain');
    expect(await served('shadow-v1')).toEqual([]); // the subset is kept: v1 gets nothing
    noErrors();
  });

  it('mirror: runtime_fraction is honoured (50 %)', async () => {
    const before = (await pod.cluster.served('shadow-v2')).count;
    const answers = await Promise.all(Array.from({ length: 200 }, () => get('mirrored', '/half')));
    expect(answers.every((a) => a.echo?.name === 'mirrored-main')).toBe(true);
    await new Promise((r) => setTimeout(r, 500));
    const copies = (await pod.cluster.served('shadow-v2')).count - before;
    // binomial(200, 0.5): outside 60..140 about once in 10^8 runs
    expect(copies).toBeGreaterThan(60);
    expect(copies).toBeLessThan(140);
    noErrors();
  });

  it('retries on Envoy\'s conditions: Istio\'s default retries 503 (POST too) but not 500; 5xx and gateway-error retry what they name', async () => {
    const tries = async (path: string, method = 'GET') => {
      const count = async () => (await Promise.all(RETRYING.endpoints.map(([name]) => pod.cluster.served(name)))).reduce((n, s) => n + s.count, 0);
      const before = await count();
      const res = await send(app(), { url: `http://${RETRYING.vip}${path}`, method });
      return { status: res.status, tries: (await count()) - before };
    };
    // 1 try + num_retries 2 = 3 tries; the last answer is what the app gets (Envoy)
    expect(await tries('/default?status=503')).toEqual({ status: 503, tries: 3 });
    expect(await tries('/default?status=503', 'POST')).toEqual({ status: 503, tries: 3 });
    expect(await tries('/default?status=500')).toEqual({ status: 500, tries: 1 });
    expect(await tries('/default?status=200')).toEqual({ status: 200, tries: 1 });
    expect(await tries('/5xx?status=500')).toEqual({ status: 500, tries: 3 });
    expect(await tries('/5xx?status=404')).toEqual({ status: 404, tries: 1 });
    expect(await tries('/gateway?status=504')).toEqual({ status: 504, tries: 3 });
    expect(await tries('/gateway?status=500')).toEqual({ status: 500, tries: 1 });
    noErrors();
  });

  it('a route to the original destination keeps working with a retry policy and a mirror (its access-phase Lua comes first)', async () => {
    const before = (await pod.cluster.served('shadow-v1')).count;
    const res = await send(app(), { url: `http://${EXTERNAL[1]}/outside?q=1` });
    expect(res.echo).toMatchObject({ name: EXTERNAL[0], url: '/outside?q=1' });
    let copies = (await pod.cluster.served('shadow-v1')).count - before;
    for (let i = 0; copies === 0 && i < 50; i++) {
      await new Promise((r) => setTimeout(r, 50));
      copies = (await pod.cluster.served('shadow-v1')).count - before;
    }
    expect(copies).toBe(1);
    noErrors();
  });
});
