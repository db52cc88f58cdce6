// Issue: "The real data plane in the tests". Every routing rule the agent translates, exercised with
// one real request from the app in the injected pod, through the capture rules and the real APISIX,
// to echo servers in the cluster namespace: what reaches the backend (or what the app gets back) is
// asserted, never the APISIX object. Matchers, route order, rewrites, header operations,
// redirects, direct responses, the pass-through to the original destination and inbound traffic
// are here; translation-upstreams.test.ts has what acts on the upstream side. APISIX's error log
// is part of every assertion (it logs an object it rejects and keeps serving the rest).
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingForPod, podManifest } from '../support/pod/requirements.js';
import { startPod, type RunningPod } from '../support/pod/pod-harness.js';
import { POD_IP } from '../support/pod/network.js';
import { describeLines } from '../support/pod/apisix-log.js';
import { send, servedBy } from '../support/echo-requests.js';
import {
  allowAnyVirtualHost, blackHoleCluster, edsCluster, fqdn, httpRoute, inboundCluster, inboundPassthroughCluster,
  MeshResources, outboundCluster, outboundHttpListener, passthroughCluster, routeConfiguration, serviceVirtualHost,
  virtualInbound, virtualOutbound,
} from '../support/istio-xds.js';

const NS = 'test';
const BACKEND_PORT = 8080;

/** One backend per route under test, so the echo's name says which route matched. */
const MATCH_VIP = '10.96.0.10';
const matchBackends = ['exact', 'regex', 'segment', 'h-exact', 'h-regex', 'h-present', 'h-affix', 'without', 'inverted', 'query', 'q-regex', 'q-present', 'method', 'first', 'second', 'caseless', 'default'];
const REWRITE_VIP = '10.96.0.11';
const HEADERS_VIP = '10.96.0.12';
const VHOST_HEADERS_VIP = '10.96.0.13';
const REDIRECT_VIP = '10.96.0.16';
const DIRECT_VIP = '10.96.0.17';
const EXTERNAL_IP = '10.66.7.7';
const APP_PORT = 8080;
const APP_OTHER_PORT = 9090;

const backendIp = (i: number) => `10.244.1.${i + 1}`;
const single = (name: string, ip: string) => ({ name, ip });
const others = { rewrite: single('rewritten', '10.244.2.1'), headers: single('headers', '10.244.3.1'), vhostHeaders: single('vhost-headers', '10.244.3.2') };

function mesh(): MeshResources {
  const m = new MeshResources();
  const cluster = (service: string, subset: string, ip: string) => {
    const name = outboundCluster(80, fqdn(service, NS), subset);
    m.cluster(edsCluster(name), [{ ip, port: BACKEND_PORT }]);
    return name;
  };
  const to = (service: string, subset: string) => ({ cluster: outboundCluster(80, fqdn(service, NS), subset) });
  matchBackends.forEach((b, i) => cluster('match', b, backendIp(i)));
  const h = (name: string, matcher: Record<string, unknown>) => ({ name, ...matcher });
  const matchRoutes = [
    httpRoute('exact', { path: '/exact' }, to('match', 'exact')),
    httpRoute('regex', { safe_regex: { regex: '/items/[0-9]+' } }, to('match', 'regex')),
    // what istiod writes for a VirtualService `prefix` without a trailing slash
    httpRoute('segment', { path_separated_prefix: '/api' }, to('match', 'segment')),
    httpRoute('h-exact', { prefix: '/h', headers: [h('x-user', { string_match: { exact: 'jason' } })] }, to('match', 'h-exact')),
    httpRoute('h-regex', { prefix: '/h', headers: [h('x-version', { string_match: { safe_regex: { regex: 'v[0-9]+' } } })] }, to('match', 'h-regex')),
    httpRoute('h-present', { prefix: '/h', headers: [h('x-flag', { present_match: true })] }, to('match', 'h-present')),
    httpRoute('h-affix', { prefix: '/h', headers: [h('x-a', { string_match: { prefix: 'pre.' } }), h('x-b', { string_match: { suffix: '.suf' } }), h('x-c', { string_match: { contains: '+in+' } })] }, to('match', 'h-affix')),
    // Istio's `withoutHeaders`: inverted, and a missing header counts as empty
    httpRoute('without', { prefix: '/w', headers: [h('x-env', { string_match: { exact: 'prod' }, invert_match: true, treat_missing_header_as_empty: true })] }, to('match', 'without')),
    // Envoy's plain inverted matcher: a missing header does not match
    httpRoute('inverted', { prefix: '/inv', headers: [h('x-env', { string_match: { exact: 'prod' }, invert_match: true })] }, to('match', 'inverted')),
    httpRoute('query', { prefix: '/q', query_parameters: [{ name: 'mode', string_match: { exact: 'fast' } }] }, to('match', 'query')),
    httpRoute('q-regex', { prefix: '/q', query_parameters: [{ name: 'id', string_match: { safe_regex: { regex: '[0-9]{3}' } } }] }, to('match', 'q-regex')),
    httpRoute('q-present', { prefix: '/q', query_parameters: [{ name: 'debug', present_match: true }] }, to('match', 'q-present')),
    httpRoute('method', { prefix: '/m', headers: [h(':method', { string_match: { exact: 'POST' } })] }, to('match', 'method')),
    httpRoute('first', { prefix: '/order' }, to('match', 'first')),
    httpRoute('second', { prefix: '/order/specific' }, to('match', 'second')),
    httpRoute('caseless', { prefix: '/CaseLess', case_sensitive: false }, to('match', 'caseless')),
    httpRoute('default', { prefix: '/' }, to('match', 'default')),
  ];

  const rewritten = cluster('rewrite', '', others.rewrite.ip);
  const rewriteRoutes = [
    httpRoute('prefix', { prefix: '/old/' }, { cluster: rewritten, prefix_rewrite: '/new/' }),
    httpRoute('exact-path', { path: '/exact-old' }, { cluster: rewritten, prefix_rewrite: '/exact-new' }),
    httpRoute('regex', { prefix: '/svc/' }, { cluster: rewritten, regex_rewrite: { pattern: { regex: '^/svc/([^/]+)/(.*)$' }, substitution: '/\\2/instance/\\1' } }),
    httpRoute('authority', { prefix: '/authority' }, { cluster: rewritten, host_rewrite_literal: 'rewritten.test.example' }),
    httpRoute('untouched', { prefix: '/' }, { cluster: rewritten }),
  ];

  const headers = cluster('headers', '', others.headers.ip);
  const headerRoutes = [
    httpRoute('ops', { prefix: '/' }, { cluster: headers }, {
      request_headers_to_add: [
        { header: { key: 'x-set', value: 'route' }, append_action: 'OVERWRITE_IF_EXISTS_OR_ADD' },
        { header: { key: 'x-add', value: 'two' }, append_action: 'APPEND_IF_EXISTS_OR_ADD' },
        { header: { key: 'x-literal', value: 'costs $5 at $remote_addr' }, append_action: 'OVERWRITE_IF_EXISTS_OR_ADD' },
      ],
      request_headers_to_remove: ['x-secret'],
    }),
  ];
  const vhostHeaders = cluster('vhost-headers', '', others.vhostHeaders.ip);
  const vhostHeadersHost = {
    ...serviceVirtualHost(fqdn('vhost-headers', NS), 80, VHOST_HEADERS_VIP, [httpRoute('plain', { prefix: '/' }, { cluster: vhostHeaders })]),
    request_headers_to_add: [{ header: { key: 'x-vhost', value: 'vh' }, append_action: 'OVERWRITE_IF_EXISTS_OR_ADD' }],
    request_headers_to_remove: ['x-vhost-secret'],
  };

  const directRoutes = [
    httpRoute('down', { prefix: '/down' }, undefined, { direct_response: { status: 503, body: { inline_string: 'under maintenance' } } }),
    httpRoute('ok', { prefix: '/' }, undefined, { direct_response: { status: 200, body: { inline_string: 'answered by the proxy' } } }),
  ];
  m.route(
    routeConfiguration(80, [
      serviceVirtualHost(fqdn('match', NS), 80, MATCH_VIP, matchRoutes),
      serviceVirtualHost(fqdn('rewrite', NS), 80, REWRITE_VIP, rewriteRoutes),
      serviceVirtualHost(fqdn('headers', NS), 80, HEADERS_VIP, headerRoutes),
      vhostHeadersHost,
      serviceVirtualHost(fqdn('direct', NS), 80, DIRECT_VIP, directRoutes),
      allowAnyVirtualHost(),
    ]),
  );

  const redirectRoutes = [
    httpRoute('path', { prefix: '/moved' }, undefined, { redirect: { path_redirect: '/new-place' } }),
    httpRoute('elsewhere', { prefix: '/elsewhere' }, undefined, { redirect: { host_redirect: 'other.test.example', path_redirect: '/landing', response_code: 'FOUND' } }),
    httpRoute('port', { prefix: '/port' }, undefined, { redirect: { port_redirect: 9443, response_code: 'TEMPORARY_REDIRECT' } }),
    httpRoute('scheme', { prefix: '/secure' }, undefined, { redirect: { scheme_redirect: 'https', path_redirect: '/tls', strip_query: true, response_code: 'PERMANENT_REDIRECT' } }),
    httpRoute('prefix', { prefix: '/pre/' }, undefined, { redirect: { prefix_rewrite: '/post/' } }),
  ];
  m.route(routeConfiguration(8080, [serviceVirtualHost(fqdn('redirect', NS), 8080, REDIRECT_VIP, redirectRoutes), allowAnyVirtualHost()]));

  m.cluster(passthroughCluster()).cluster(blackHoleCluster()).cluster(inboundPassthroughCluster()).cluster(inboundCluster(APP_PORT));
  m.listener(outboundHttpListener(80)).listener(outboundHttpListener(8080)).listener(virtualOutbound());
  m.listener(virtualInbound([{ port: APP_PORT, service: fqdn('client', NS) }]));
  return m;
}

const clusterAddresses = [
  MATCH_VIP, REWRITE_VIP, HEADERS_VIP, VHOST_HEADERS_VIP, REDIRECT_VIP, DIRECT_VIP, EXTERNAL_IP,
  ...matchBackends.map((_, i) => backendIp(i)), ...Object.values(others).map((o) => o.ip),
];

describeWhenAvailable('translation rules on the real data plane: routing, rewrites, headers, pass-through, inbound', missingForPod(), () => {
  let pod: RunningPod;
  const app = () => pod.app();
  const noErrors = () => expect(pod.apisixErrors(), describeLines(pod.apisixErrors())).toEqual([]);
  const nameAt = (url: string, headers: Record<string, string> = {}, method = 'GET') => servedBy(app(), { url, headers, method });

  beforeAll(async () => {
    pod = await startPod({
      manifest: podManifest('client', NS, { app: 'client' }, [{ name: 'app', ports: [APP_PORT] }]),
      xds: mesh().resources,
      clusterAddresses,
    });
    await pod.kubelet.waitReady(15_000);
    expect(await pod.waitSynced()).toBe(true);
    await Promise.all([
      ...matchBackends.map((b, i) => pod.cluster.serve(b, backendIp(i), BACKEND_PORT)),
      ...Object.values(others).map((o) => pod.cluster.serve(o.name, o.ip, BACKEND_PORT)),
      pod.cluster.serve('external-80', EXTERNAL_IP, 80),
      pod.cluster.serve('external-9999', EXTERNAL_IP, 9999),
      app().serve('app', '0.0.0.0', APP_PORT),
      app().serve('app-other-port', '0.0.0.0', APP_OTHER_PORT),
    ]);
  });
  afterAll(async () => {
    await pod?.stop();
  });

  it('path matchers: exact (query ignored), safe_regex (whole path), prefix (case-insensitive when asked)', async () => {
    const url = (path: string) => `http://${MATCH_VIP}${path}`;
    expect(await nameAt(url('/exact'))).toBe('exact');
    expect(await nameAt(url('/exact?x=1'))).toBe('exact');
    expect(await nameAt(url('/exact/more'))).toBe('default');
    expect(await nameAt(url('/items/42'))).toBe('regex');
    expect(await nameAt(url('/items/42/x'))).toBe('default');
    expect(await nameAt(url('/items/abc'))).toBe('default');
    expect(await nameAt(url('/api'))).toBe('segment');
    expect(await nameAt(url('/api/v1'))).toBe('segment');
    expect(await nameAt(url('/apix'))).toBe('default');
    expect(await nameAt(url('/caseless/x'))).toBe('caseless');
    expect(await nameAt(url('/CASELESS'))).toBe('caseless');
    expect(await nameAt(url('/anything'))).toBe('default');
    noErrors();
  });

  it('header matchers: exact, regex (anchored), present (empty value too), prefix/suffix/contains (literal)', async () => {
    const url = `http://${MATCH_VIP}/h`;
    expect(await nameAt(url, { 'x-user': 'jason' })).toBe('h-exact');
    expect(await nameAt(url, { 'x-user': 'jasonx' })).toBe('default');
    expect(await nameAt(url, { 'x-version': 'v12' })).toBe('h-regex');
    expect(await nameAt(url, { 'x-version': 'v12b' })).toBe('default');
    expect(await nameAt(url, { 'x-flag': '' })).toBe('h-present');
    expect(await nameAt(url, { 'x-flag': 'on' })).toBe('h-present');
    expect(await nameAt(url, { 'x-a': 'pre.1', 'x-b': '2.suf', 'x-c': 'a+in+b' })).toBe('h-affix');
    expect(await nameAt(url, { 'x-a': 'pre.1', 'x-b': '2.suf', 'x-c': 'a-in-b' })).toBe('default');
    expect(await nameAt(url, { 'x-a': 'preX1', 'x-b': '2.suf', 'x-c': 'a+in+b' })).toBe('default');
    expect(await nameAt(url)).toBe('default');
    noErrors();
  });

  it('inverted header matchers: Istio withoutHeaders (missing = empty) and Envoy\'s plain invert (missing = no match)', async () => {
    expect(await nameAt(`http://${MATCH_VIP}/w`)).toBe('without');
    expect(await nameAt(`http://${MATCH_VIP}/w`, { 'x-env': 'dev' })).toBe('without');
    expect(await nameAt(`http://${MATCH_VIP}/w`, { 'x-env': 'prod' })).toBe('default');
    expect(await nameAt(`http://${MATCH_VIP}/inv`, { 'x-env': 'dev' })).toBe('inverted');
    expect(await nameAt(`http://${MATCH_VIP}/inv`, { 'x-env': 'prod' })).toBe('default');
    expect(await nameAt(`http://${MATCH_VIP}/inv`)).toBe('default');
    noErrors();
  });

  it('query parameter and method matchers', async () => {
    expect(await nameAt(`http://${MATCH_VIP}/q?mode=fast`)).toBe('query');
    expect(await nameAt(`http://${MATCH_VIP}/q?mode=slow`)).toBe('default');
    expect(await nameAt(`http://${MATCH_VIP}/q`)).toBe('default');
    expect(await nameAt(`http://${MATCH_VIP}/q?id=123`)).toBe('q-regex');
    expect(await nameAt(`http://${MATCH_VIP}/q?id=1234`)).toBe('default');
    expect(await nameAt(`http://${MATCH_VIP}/q?debug`)).toBe('q-present');
    expect(await nameAt(`http://${MATCH_VIP}/q?debug=1`)).toBe('q-present');
    expect(await nameAt(`http://${MATCH_VIP}/m`, {}, 'POST')).toBe('method');
    expect(await nameAt(`http://${MATCH_VIP}/m`, {}, 'GET')).toBe('default');
    noErrors();
  });

  it('route order: the first route that matches wins, even when a later one is more specific', async () => {
    expect(await nameAt(`http://${MATCH_VIP}/order/specific`)).toBe('first');
    expect(await nameAt(`http://${MATCH_VIP}/order`)).toBe('first');
    const seen = await pod.cluster.served('second');
    expect(seen.count).toBe(0);
    noErrors();
  });

  it('rewrites: prefix_rewrite (prefix and exact path), regex_rewrite, host_rewrite_literal; the query string stays', async () => {
    const at = async (path: string) => (await send(app(), { url: `http://${REWRITE_VIP}${path}` })).echo!;
    expect((await at('/old/page?q=1')).url).toBe('/new/page?q=1');
    expect((await at('/exact-old?x=1')).url).toBe('/exact-new?x=1');
    expect((await at('/svc/foo/bar?z=1')).url).toBe('/bar/instance/foo?z=1');
    const authority = await at('/authority/x');
    expect(authority.url).toBe('/authority/x');
    expect(authority.headers['host']).toBe('rewritten.test.example');
    const untouched = await at('/plain');
    expect(untouched.url).toBe('/plain');
    expect(untouched.headers['host']).toBe(REWRITE_VIP);
    noErrors();
  });

  it('route header operations: set overwrites, add appends, remove removes; values with `$` stay literal', async () => {
    const res = await send(app(), { url: `http://${HEADERS_VIP}/x`, headers: { 'x-set': 'client', 'x-add': 'one', 'x-secret': 'token', 'x-kept': 'k' } });
    const seen = res.echo!.headers;
    expect(seen['x-set']).toBe('route');
    expect(seen['x-add']).toBe('one, two');
    expect(seen['x-secret']).toBeUndefined();
    expect(seen['x-kept']).toBe('k');
    // Envoy sends header values literally; proxy-rewrite would interpolate `$name` (nginx variables)
    // and `$1` into them — the agent writes `$` through a variable holding it (resolveVarLiteral)
    expect(seen['x-literal']).toBe('costs $5 at $remote_addr');
    noErrors();
  });

  it('virtual host header operations apply to every route of the host', async () => {
    const res = await send(app(), { url: `http://${VHOST_HEADERS_VIP}/x`, headers: { 'x-vhost': 'client', 'x-vhost-secret': 's' } });
    const seen = res.echo!.headers;
    expect(seen['x-vhost']).toBe('vh');
    expect(seen['x-vhost-secret']).toBeUndefined();
    noErrors();
  });

  it('redirect: the Host as sent (port included) and the query stay unless replaced; host, port, scheme, prefix rewrite, codes', async () => {
    const moved = await send(app(), { url: `http://${REDIRECT_VIP}:8080/moved?a=1` });
    expect(moved.status).toBe(301);
    expect(moved.headers['location']).toBe(`http://${REDIRECT_VIP}:8080/new-place?a=1`);
    const elsewhere = await send(app(), { url: `http://${REDIRECT_VIP}:8080/elsewhere` });
    expect(elsewhere.status).toBe(302);
    expect(elsewhere.headers['location']).toBe('http://other.test.example/landing');
    const port = await send(app(), { url: `http://${REDIRECT_VIP}:8080/port/x?b=2` });
    expect([port.status, port.headers['location']]).toEqual([307, `http://${REDIRECT_VIP}:9443/port/x?b=2`]);
    const scheme = await send(app(), { url: `http://${REDIRECT_VIP}:8080/secure?c=3` });
    expect([scheme.status, scheme.headers['location']]).toEqual([308, `https://${REDIRECT_VIP}:8080/tls`]);
    const prefix = await send(app(), { url: `http://${REDIRECT_VIP}:8080/pre/x?d=4` });
    expect([prefix.status, prefix.headers['location']]).toEqual([301, `http://${REDIRECT_VIP}:8080/post/x?d=4`]);
    // Envoy picks one virtual host by domain and answers 404 when none of its routes matches;
    // it never falls through to allow_any
    const unmatched = await send(app(), { url: `http://${REDIRECT_VIP}:8080/nothing-here` });
    expect([unmatched.status, unmatched.echo]).toEqual([404, undefined]);
    noErrors();
  });

  it('direct response: status and body from the proxy, no backend', async () => {
    const down = await send(app(), { url: `http://${DIRECT_VIP}/down` });
    expect([down.status, down.body, down.echo]).toEqual([503, 'under maintenance', undefined]);
    const ok = await send(app(), { url: `http://${DIRECT_VIP}/` });
    expect([ok.status, ok.body, ok.echo]).toEqual([200, 'answered by the proxy', undefined]);
    noErrors();
  });

  it('ALLOW_ANY: an unknown host on a routed port, and an unrouted port, reach the address the app dialled', async () => {
    const known = await send(app(), { url: `http://${EXTERNAL_IP}/outside?k=v` });
    expect(known.echo).toMatchObject({ name: 'external-80', url: '/outside?k=v', peer: POD_IP });
    expect(known.echo!.headers['host']).toBe(EXTERNAL_IP);
    const unrouted = await send(app(), { url: `http://${EXTERNAL_IP}:9999/x` });
    expect(unrouted.echo).toMatchObject({ name: 'external-9999', url: '/x', peer: POD_IP });
    noErrors();
  });

  it('inbound: a request to the pod reaches the app from 127.0.0.6, on the app port\'s route and through the inbound pass-through', async () => {
    const routed = await send(pod.cluster, { url: `http://${POD_IP}:${APP_PORT}/hello` });
    expect(routed.echo).toMatchObject({ name: 'app', url: '/hello', peer: '127.0.0.6' });
    const passthrough = await send(pod.cluster, { url: `http://${POD_IP}:${APP_OTHER_PORT}/other` });
    expect(passthrough.echo).toMatchObject({ name: 'app-other-port', url: '/other', peer: '127.0.0.6' });
    noErrors();
  });
});
