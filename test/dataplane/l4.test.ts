// The L4 front on the real APISIX (agent/l4/): every connection the capture rules redirect lands on
// APISIX's stream subsystem and is dispatched as Envoy dispatches it with istiod's listeners. From
// the app in the injected pod (default capture rules, no excludes) to servers in the cluster
// namespace, and from the cluster to the app: TLS passed through end to end (the client verifies the
// server's own certificate), raw TCP both client-first and server-first, half-closed clients, a
// mesh TCP service's weighted split, TLS by SNI (to EDS and DNS clusters), a hostile ClientHello,
// REGISTRY_ONLY's refusals, inbound TCP from 127.0.0.6, a network RBAC chain and a STRICT mTLS
// chain without a workload certificate refused, and HTTP on the same capture port meanwhile.
// APISIX's error log in every test. (mTLS in front of TCP with a certificate: mtls-inbound-tcp.test.ts.)
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { generateCa, generateServingCert } from '../../webhook/certificates/generate.js';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingForPod, podManifest } from '../support/pod/requirements.js';
import { PLAINTEXT_ISTIOD_CONFIG, startPod, type RunningPod } from '../support/pod/pod-harness.js';
import { POD_IP } from '../support/pod/network.js';
import { describeLines } from '../support/pod/apisix-log.js';
import { send } from '../support/echo-requests.js';
import type { Echo, HttpAnswer, NetnsWorker, TcpResult } from '../support/pod/worker-client.js';
import { waitFor } from '../support/wait.js';
import {
  allowAnyVirtualHost, blackHoleCluster, edsCluster, fqdn, httpRoute, inboundCluster, inboundPassthroughCluster, MeshResources, outboundCluster,
  outboundHttpListener, outboundTcpListener, outboundTlsListener, passthroughCluster, rbacNetworkFilter, routeConfiguration, serviceVirtualHost,
  loadAssignment, strictDnsCluster, virtualInbound, virtualOutbound, type OutboundTrafficPolicy,
} from '../support/istio-xds.js';

const NS = 'data';

/** Outside the mesh (ALLOW_ANY passes them, REGISTRY_ONLY refuses them). */
const EXTERNAL = {
  https: { ip: '203.0.113.50', port: 8443, name: 'external.example.org' },
  tcp: { ip: '203.0.113.60', echoPort: 7000, bannerPort: 7001 },
  /** only used to see when a push reached APISIX's stream workers (see `untilOutbound`) */
  probe: { ip: '203.0.113.61', port: 7100 },
};
const BANNER = '220 banner.example.org ESMTP ready\r\n';

/** A mesh TCP service: a VirtualService `tcp` route splits 80/20 between two subsets. */
const DB = { vip: '10.96.50.10', port: 9000, host: fqdn('db', NS) };
const DB_V1 = outboundCluster(DB.port, DB.host, 'v1');
const DB_V2 = outboundCluster(DB.port, DB.host, 'v2');
const DB_ENDPOINTS = { 'db-v1-a': ['10.244.7.11', DB_V1], 'db-v1-b': ['10.244.7.12', DB_V1], 'db-v2': ['10.244.7.21', DB_V2] } as const;
/** where a later push moves both subsets (the stream workers must follow an endpoint change) */
const DB_MOVED = '10.244.7.31';

/** An HTTP mesh service on another port of the same capture listener. */
const CHECKOUT = { vip: '10.96.44.7', port: 8080, host: fqdn('checkout', NS), endpoint: '10.244.5.11' };
const CHECKOUT_CLUSTER = outboundCluster(CHECKOUT.port, CHECKOUT.host);

/**
 * A TLS ServiceEntry (hosts only, resolution STATIC): api.example.com:443 → its endpoint. The app
 * dials the address its DNS gave (API.dialled, where a decoy with the same certificate listens: a
 * connection passed through instead of sent to the cluster would reach it); another SNI on 443 goes
 * where the app dialled (OTHER).
 */
const API = { name: 'api.example.com', dialled: '198.51.100.7', endpoint: '10.244.9.5' };
const API_CLUSTER = outboundCluster(443, API.name);
/** The same with `resolution: DNS`: the sidecar resolves the name (the pod's DNS: its /etc/hosts) and connects there. */
const DNS_API = { name: 'dns.example.com', dialled: '198.51.100.9', resolved: '10.244.9.6' };
const DNS_API_CLUSTER = outboundCluster(443, DNS_API.name);
const OTHER = { name: 'other.example.net', ip: '198.51.100.8' };

/** The pod's own TCP ports: one plain, one under a TCP AuthorizationPolicy (network RBAC on a principal: denies without mTLS). */
const PG_PORT = 5432;
const GUARDED_PORT = 5433;
/** Under PeerAuthentication STRICT: mTLS only, which this pod (no CA, no workload certificate) refuses. */
const STRICT_PORT = 5434;
/** A port no service declares: the inbound catch-all passes it through (InboundPassthroughClusterIpv4). */
const UNDECLARED_PORT = 6000;

function mesh(mode: OutboundTrafficPolicy): MeshResources {
  const m = new MeshResources();
  m.cluster(edsCluster(DB_V1), [{ ip: DB_ENDPOINTS['db-v1-a'][0], port: DB.port }, { ip: DB_ENDPOINTS['db-v1-b'][0], port: DB.port }]);
  m.cluster(edsCluster(DB_V2), [{ ip: DB_ENDPOINTS['db-v2'][0], port: DB.port }]);
  m.cluster(edsCluster(CHECKOUT_CLUSTER), [{ ip: CHECKOUT.endpoint, port: CHECKOUT.port }]);
  m.cluster(edsCluster(API_CLUSTER), [{ ip: API.endpoint, port: 443 }]);
  m.cluster(strictDnsCluster(DNS_API_CLUSTER, DNS_API.name, 443));
  m.cluster(passthroughCluster()).cluster(blackHoleCluster()).cluster(inboundPassthroughCluster());
  m.cluster(inboundCluster(PG_PORT)).cluster(inboundCluster(GUARDED_PORT)).cluster(inboundCluster(STRICT_PORT));
  m.listener(outboundTcpListener(DB.vip, DB.port, [{ name: DB_V1, weight: 80 }, { name: DB_V2, weight: 20 }]));
  m.listener(outboundHttpListener(CHECKOUT.port, mode));
  m.route(routeConfiguration(CHECKOUT.port, [serviceVirtualHost(CHECKOUT.host, CHECKOUT.port, CHECKOUT.vip, [httpRoute('default', { prefix: '/' }, { cluster: CHECKOUT_CLUSTER })]), allowAnyVirtualHost()]));
  m.listener(outboundTlsListener(443, [{ serverNames: [API.name], cluster: API_CLUSTER }, { serverNames: [DNS_API.name], cluster: DNS_API_CLUSTER }], mode));
  m.listener(virtualOutbound(mode));
  const denyAll = rbacNetworkFilter('ALLOW', { 'ns[data]-policy[pg-from-backup]-rule[0]': { permissions: [{ any: true }], principals: [{ authenticated: { principal_name: { exact: 'spiffe://cluster.local/ns/data/sa/backup' } } }] } });
  m.listener(
    virtualInbound([
      { port: PG_PORT, service: fqdn('pg', NS), protocol: 'tcp' },
      { port: GUARDED_PORT, service: fqdn('pg', NS), protocol: 'tcp', filters: [denyAll] },
      { port: STRICT_PORT, service: fqdn('pg', NS), protocol: 'tcp', strict: true },
    ]),
  );
  return m;
}

/** A CA only the app trusts, and a certificate of it for each TLS server's name. */
function certificates(): { ca: string; servers: Record<string, { cert: string; key: string }> } {
  const ca = generateCa({ commonName: 'l4-test-ca' });
  const serving = (name: string) => {
    const { certPem, keyPem } = generateServingCert(ca, [name], { days: 1 });
    return { cert: certPem, key: keyPem };
  };
  return { ca: ca.certPem, servers: Object.fromEntries([EXTERNAL.https.name, API.name, DNS_API.name, OTHER.name].map((name) => [name, serving(name)])) };
}

/**
 * A TLS record holding a ClientHello with these extensions (type, body) and nothing else of note:
 * what a hostile client can put in front of the front's TLS inspection.
 */
function clientHello(extensions: Array<[number, Buffer]>): Buffer {
  const u16 = (n: number) => Buffer.from([n >> 8, n & 0xff]);
  const exts = Buffer.concat(extensions.map(([type, body]) => Buffer.concat([u16(type), u16(body.length), body])));
  const body = Buffer.concat([u16(0x0303), randomBytes(32), Buffer.from([0]), u16(2), u16(0x1301), Buffer.from([1, 0]), u16(exts.length), exts]);
  const handshake = Buffer.concat([Buffer.from([1, 0]), u16(body.length), body]);
  return Buffer.concat([Buffer.from([0x16, 3, 1]), u16(handshake.length), handshake]);
}

const text = (r: TcpResult) => r.received.map((b) => b.toString('utf8'));

describeWhenAvailable('L4 front: TCP and TLS through the sidecar as Envoy dispatches them (real APISIX)', missingForPod(), () => {
  let pod: RunningPod;
  let ca: string;
  const app = (): NetnsWorker => pod.app();
  const served = async (name: string): Promise<number> => (await pod.cluster.served(name)).count;
  const noErrors = () => {
    const errors = pod.apisixErrors();
    expect(errors, describeLines(errors)).toEqual([]);
  };
  const https = (ip: string, port: number, servername: string): Promise<HttpAnswer | { error: string }> =>
    app().http({ url: `https://${ip}:${port}/hello`, servername, ca, headers: { host: servername }, timeoutMs: 5000 });
  /** one client-first exchange: `message` sent, its echo awaited */
  const echo = (worker: NetnsWorker, ip: string, port: number, message: string | Buffer): Promise<TcpResult> =>
    worker.tcp(ip, port, [{ send: message, want: Buffer.byteLength(message) }], 5000);
  /**
   * After a push that only changes listeners, nothing APISIX exports says when its stream workers
   * have the new ones: a probe connection to a server no test counts shows it.
   */
  const untilOutbound = (mode: OutboundTrafficPolicy) =>
    waitFor(async () => {
      const r = await echo(app(), EXTERNAL.probe.ip, EXTERNAL.probe.port, 'probe');
      return mode === 'ALLOW_ANY' ? text(r)[0] === 'probe' : r.closed && r.received[0]!.length === 0;
    }, 10_000, `the front to apply ${mode}`);
  const switchTo = async (mode: OutboundTrafficPolicy) => {
    for (const l of mesh(mode).resources.listener) pod.istiod.set('listener', l);
    await pod.push(['listener']);
    await untilOutbound(mode);
  };

  beforeAll(async () => {
    const certs = certificates();
    ca = certs.ca;
    pod = await startPod({
      manifest: podManifest('client', NS, { app: 'client' }, [{ name: 'app', ports: [PG_PORT, GUARDED_PORT, STRICT_PORT] }]),
      xds: mesh('ALLOW_ANY').resources,
      clusterAddresses: [
        EXTERNAL.https.ip, EXTERNAL.tcp.ip, EXTERNAL.probe.ip, DB.vip, ...Object.values(DB_ENDPOINTS).map(([ip]) => ip), DB_MOVED,
        CHECKOUT.vip, CHECKOUT.endpoint, API.dialled, API.endpoint, DNS_API.dialled, DNS_API.resolved, OTHER.ip,
      ],
      hosts: { [DNS_API.name]: DNS_API.resolved },
    });
    const cluster = pod.cluster;
    await Promise.all([
      cluster.serveTls('external-https', EXTERNAL.https.ip, EXTERNAL.https.port, certs.servers[EXTERNAL.https.name]!),
      cluster.serveTcp('external-echo', EXTERNAL.tcp.ip, EXTERNAL.tcp.echoPort),
      cluster.serveTcp('external-banner', EXTERNAL.tcp.ip, EXTERNAL.tcp.bannerPort, { banner: BANNER }),
      cluster.serveTcp('probe', EXTERNAL.probe.ip, EXTERNAL.probe.port),
      ...Object.entries(DB_ENDPOINTS).map(([name, [ip]]) => cluster.serveTcp(name, ip, DB.port)),
      cluster.serveTcp('db-moved', DB_MOVED, DB.port),
      cluster.serve('checkout', CHECKOUT.endpoint, CHECKOUT.port),
      cluster.serveTls('api-endpoint', API.endpoint, 443, certs.servers[API.name]!),
      cluster.serveTls('api-decoy', API.dialled, 443, certs.servers[API.name]!),
      cluster.serveTls('dns-api-endpoint', DNS_API.resolved, 443, certs.servers[DNS_API.name]!),
      cluster.serveTls('dns-api-decoy', DNS_API.dialled, 443, certs.servers[DNS_API.name]!),
      cluster.serveTls('other', OTHER.ip, 443, certs.servers[OTHER.name]!),
      app().serveTcp('pg', '0.0.0.0', PG_PORT),
      app().serveTcp('guarded', '0.0.0.0', GUARDED_PORT),
      app().serveTcp('strict', '0.0.0.0', STRICT_PORT),
      app().serveTcp('undeclared', '0.0.0.0', UNDECLARED_PORT),
    ]);
    await pod.kubelet.waitReady(20_000);
    expect(await pod.waitSynced()).toBe(true);
  }, 60_000);
  afterAll(async () => {
    await pod?.stop();
  });

  it('HTTPS to a host outside the mesh (ALLOW_ANY): the handshake is the server\'s own (SNI sent), 200', async () => {
    const res = await https(EXTERNAL.https.ip, EXTERNAL.https.port, EXTERNAL.https.name);
    expect(res).toMatchObject({ status: 200 });
    // the client trusted only the test CA and checked the name: APISIX did not terminate TLS
    const seen = JSON.parse((res as HttpAnswer).body) as Echo;
    expect(seen).toMatchObject({ name: 'external-https', servername: EXTERNAL.https.name, url: '/hello', peer: POD_IP });
    noErrors();
  });

  it('raw TCP outside the mesh: a client-first exchange echoes; a server-first banner arrives before the client says anything', async () => {
    const client = await echo(app(), EXTERNAL.tcp.ip, EXTERNAL.tcp.echoPort, 'hello over tcp\n');
    expect(client).toMatchObject({ closed: false });
    expect(text(client)).toEqual(['hello over tcp\n']);
    const server = await app().tcp(EXTERNAL.tcp.ip, EXTERNAL.tcp.bannerPort, [{ want: BANNER.length }, { send: 'EHLO app\r\n', want: 10 }], 5000);
    expect(server.error).toBeUndefined();
    expect(text(server)).toEqual([BANNER, 'EHLO app\r\n']);
    noErrors();
  });

  it('a client that half-closes after its request still gets the answer (Envoy\'s TCP proxy keeps the other direction open)', async () => {
    const outside = await app().tcp(EXTERNAL.tcp.ip, EXTERNAL.tcp.echoPort, [{ send: 'last words\n', end: true, want: 11 }], 5000);
    expect(outside.error).toBeUndefined();
    expect(text(outside)).toEqual(['last words\n']);
    const mesh = await app().tcp(DB.vip, DB.port, [{ send: 'last row\n', end: true, want: 9 }], 5000);
    expect(mesh.error).toBeUndefined();
    expect(text(mesh)).toEqual(['last row\n']);
    const inbound = await pod.cluster.tcp(POD_IP, PG_PORT, [{ send: 'bye\n', end: true, want: 4 }], 5000);
    expect(inbound.error).toBeUndefined();
    expect(text(inbound)).toEqual(['bye\n']);
    noErrors();
  });

  it('a mesh TCP service split 80/20 echoes through its endpoints; HTTP on another port of the capture listener meanwhile', async () => {
    const before = Object.fromEntries(await Promise.all(Object.keys(DB_ENDPOINTS).map(async (name) => [name, await served(name)] as const)));
    const N = 200;
    const tcp = (async () => {
      const bad: string[] = [];
      for (let i = 0; i < N; i += 10) {
        const batch = await Promise.all(Array.from({ length: 10 }, (_, j) => echo(app(), DB.vip, DB.port, `row ${i + j}\n`)));
        batch.forEach((r, j) => text(r)[0] !== `row ${i + j}\n` && bad.push(`${i + j}: ${JSON.stringify(text(r))} ${r.error ?? ''}`));
      }
      return bad;
    })();
    const http = (async () => {
      const answers: Array<string | undefined> = [];
      for (let i = 0; i < 20; i++) answers.push((await send(app(), { url: `http://${CHECKOUT.vip}:${CHECKOUT.port}/cart/${i}`, headers: { host: CHECKOUT.host } })).echo?.name);
      return answers;
    })();
    const [bad, answers] = await Promise.all([tcp, http]);
    expect(bad).toEqual([]);
    expect(answers).toEqual(Array.from({ length: 20 }, () => 'checkout'));
    const count = async (name: keyof typeof DB_ENDPOINTS) => (await served(name)) - before[name]!;
    const [a, b, v2] = [await count('db-v1-a'), await count('db-v1-b'), await count('db-v2')];
    expect(a + b + v2).toBe(N);
    // binomial(200, 0.2): mean 40, standard deviation 5.7; 17..63 is four of them either side
    expect(v2).toBeGreaterThanOrEqual(17);
    expect(v2).toBeLessThanOrEqual(63);
    expect(a).toBeGreaterThan(0);
    expect(b).toBeGreaterThan(0);
    noErrors();
  });

  it('TLS by SNI on 443: the ServiceEntry\'s host goes to its endpoint, not where the app dialled; another name passes through', async () => {
    const api = await https(API.dialled, 443, API.name);
    expect(api).toMatchObject({ status: 200 });
    expect(JSON.parse((api as HttpAnswer).body)).toMatchObject({ name: 'api-endpoint', servername: API.name });
    expect(await served('api-decoy')).toBe(0);
    // resolution DNS: to the address the sidecar resolves the host to
    const dns = await https(DNS_API.dialled, 443, DNS_API.name);
    expect(dns).toMatchObject({ status: 200 });
    expect(JSON.parse((dns as HttpAnswer).body)).toMatchObject({ name: 'dns-api-endpoint', servername: DNS_API.name });
    expect(await served('dns-api-decoy')).toBe(0);
    const other = await https(OTHER.ip, 443, OTHER.name);
    expect(other).toMatchObject({ status: 200 });
    expect(JSON.parse((other as HttpAnswer).body)).toMatchObject({ name: 'other', servername: OTHER.name, peer: POD_IP });
    noErrors();
  });

  it('a malformed ClientHello (an ALPN list longer than its extension) is inspected without a Lua error: no SNI, the default chain', async () => {
    const alpn = Buffer.from([0, 200, 2, 0x68, 0x32]); // says 200 bytes of protocol names, holds 3
    const res = await app().tcp(OTHER.ip, 443, [{ send: clientHello([[16, alpn]]), want: 1 }], 5000);
    // passed through to where it was dialled (the default chain): its TLS server answers with an alert
    expect(res.error).toBeUndefined();
    expect(res.received[0]![0]).toBe(0x15);
    noErrors();
  });

  it('inbound TCP on a declared port and on an undeclared one: bytes untouched both ways, the app sees 127.0.0.6', async () => {
    const before = (await pod.app().served('pg')).count;
    // every byte value, after a first byte that is neither TLS (0x16) nor an HTTP method's first letter
    const payload = Buffer.concat([Buffer.from('\0'), randomBytes(200_000)]);
    const res = await echo(pod.cluster, POD_IP, PG_PORT, payload);
    expect(res.error).toBeUndefined();
    expect(Buffer.compare(res.received[0]!, payload)).toBe(0);
    const seen = await pod.app().served('pg');
    expect(seen.count).toBe(before + 1);
    expect(seen.requests.at(-1)).toEqual({ peer: '127.0.0.6' });
    // a port no service declares: the catch-all chains look at the first bytes (not HTTP) and pass it through
    const other = await echo(pod.cluster, POD_IP, UNDECLARED_PORT, payload);
    expect(Buffer.compare(other.received[0]!, payload)).toBe(0);
    expect((await pod.app().served('undeclared')).requests).toEqual([{ peer: '127.0.0.6' }]);
    noErrors();
  });

  it('inbound TCP under a network RBAC ALLOW on a peer principal (unknown without mTLS): the connection is closed, the app sees nothing', async () => {
    const res = await echo(pod.cluster, POD_IP, GUARDED_PORT, 'let me in\n');
    expect(res.closed).toBe(true);
    expect(res.received[0]!.length).toBe(0);
    expect((await pod.app().served('guarded')).count).toBe(0);
    noErrors();
  });

  it('inbound TCP under STRICT mTLS without a workload certificate (no CA): a ClientHello with Istio\'s ALPN gets at most a TLS alert, plaintext is closed, the app sees nothing', async () => {
    const alpn = Buffer.from([0, 6, 5, ...Buffer.from('istio')]);
    const hello = await pod.cluster.tcp(POD_IP, STRICT_PORT, [{ send: Buffer.concat([clientHello([[16, alpn]]), Buffer.from('then plaintext\n')]), want: 1 }], 5000);
    // the stream TLS listener's handshake fails (here already at the cipher of this minimal hello):
    // an alert record (type 21) at most, never a byte of the app's
    const answer = hello.received[0]!;
    expect(answer.length === 0 || answer[0] === 21, answer.toString('hex')).toBe(true);
    const plain = await echo(pod.cluster, POD_IP, STRICT_PORT, 'plaintext\n');
    expect(plain.closed).toBe(true);
    expect(plain.received[0]!.length).toBe(0);
    expect((await pod.app().served('strict')).count).toBe(0);
    noErrors();
  });

  it('the stream workers hold none of APISIX\'s upstreams (each says so after its start; APISIX\'s stream code still matches what the sidecar replaces)', () => {
    const log = pod.apisixLog();
    const workers = new Set([...log.matchAll(/apisix-mesh: stream worker (\d+) holds none of APISIX's upstreams/g)].map((m) => Number(m[1])));
    expect([...workers].sort()).toEqual(Array.from({ length: pod.apisixWorkers }, (_, i) => i));
    noErrors();
  });

  it('an endpoint change of a TCP chain\'s clusters reaches the stream workers: new connections go to the new endpoint only', async () => {
    const moved = (cluster: string) => loadAssignment(cluster, [{ ip: DB_MOVED, port: DB.port }]);
    const original = [DB_V1, DB_V2].map((c) => pod.istiod.get('endpoint', c)!);
    for (const c of [DB_V1, DB_V2]) pod.istiod.set('endpoint', moved(c));
    await pod.push(['endpoint']);
    // the push is done when the HTTP side has it (pod.push); the stream workers watch on their own
    await waitFor(async () => {
      await echo(app(), DB.vip, DB.port, 'moved?\n');
      return (await served('db-moved')) > 0;
    }, 10_000, 'a connection to reach the moved endpoint');
    const before = Object.fromEntries(await Promise.all(Object.keys(DB_ENDPOINTS).map(async (name) => [name, await served(name)] as const)));
    const movedBefore = await served('db-moved');
    for (let i = 0; i < 20; i++) expect(text(await echo(app(), DB.vip, DB.port, `moved ${i}\n`))).toEqual([`moved ${i}\n`]);
    expect((await served('db-moved')) - movedBefore).toBe(20);
    for (const name of Object.keys(DB_ENDPOINTS)) expect(await served(name)).toBe(before[name]);
    for (const cla of original) pod.istiod.set('endpoint', cla);
    await pod.push(['endpoint']);
    noErrors();
  });

  it('REGISTRY_ONLY: TLS and TCP to destinations outside the registry are closed and reach nobody; the registry still works; ALLOW_ANY again passes them', async () => {
    const outside = ['external-https', 'external-echo', 'external-banner', 'other'];
    const before = await Promise.all(outside.map(served));
    await switchTo('REGISTRY_ONLY');

    expect(await https(EXTERNAL.https.ip, EXTERNAL.https.port, EXTERNAL.https.name)).toMatchObject({ error: expect.any(String) });
    expect(await https(OTHER.ip, 443, OTHER.name)).toMatchObject({ error: expect.any(String) });
    const tcp = await echo(app(), EXTERNAL.tcp.ip, EXTERNAL.tcp.echoPort, 'anyone?\n');
    expect(tcp).toMatchObject({ closed: true });
    expect(tcp.received[0]!.length).toBe(0);
    const banner = await app().tcp(EXTERNAL.tcp.ip, EXTERNAL.tcp.bannerPort, [{ want: BANNER.length }], 5000);
    expect(banner).toMatchObject({ closed: true });
    expect(banner.received[0]!.length).toBe(0);
    expect(await Promise.all(outside.map(served))).toEqual(before);
    // what the registry has still goes through
    expect(text(await echo(app(), DB.vip, DB.port, 'registered\n'))).toEqual(['registered\n']);
    expect(await https(API.dialled, 443, API.name)).toMatchObject({ status: 200 });
    noErrors();

    await switchTo('ALLOW_ANY');
    expect(await https(EXTERNAL.https.ip, EXTERNAL.https.port, EXTERNAL.https.name)).toMatchObject({ status: 200 });
    expect(await https(OTHER.ip, 443, OTHER.name)).toMatchObject({ status: 200 });
    expect(text(await echo(app(), EXTERNAL.tcp.ip, EXTERNAL.tcp.echoPort, 'again\n'))).toEqual(['again\n']);
    noErrors();
  });
});
