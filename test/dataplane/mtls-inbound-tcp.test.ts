// Istio's inbound mTLS in front of TCP ports on the real APISIX (agent/l4/lua/apisix_mesh/tcp_mtls.lua):
// the L4 front picks the chain that terminates Istio's mTLS before a TCP proxy and hands the raw TLS to
// its stream TLS listener on loopback, which presents the workload certificate Istio's CA issued
// (here the fake CA, reached as istiod's would be), requires a client certificate chained to the
// mesh root, checks the peer's URI SAN against the chain's match_subject_alt_names and the chain's
// network RBAC with the peer's principal, then hands the plaintext bytes to the app from 127.0.0.6.
// Clients connect as Envoy does for a TCP service: SNI outbound_.<port>_._.<host>, ALPN
// istio-peer-exchange / istio. The app greets each connection with a banner and echoes: a client that
// got no banner was never connected to it, and the app counts its connections. STRICT refuses
// plaintext and unverified clients; PERMISSIVE serves both; before the CA issued anything, the
// handshake is refused; the pod is dual-stack, and an IPv6 client's plaintext leaves from ::6.
// APISIX's error log in every test.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingForPod, podManifest } from '../support/pod/requirements.js';
import { ISTIOD_IP, startPod, type RunningPod } from '../support/pod/pod-harness.js';
import { POD_IP, POD_IP6 } from '../support/pod/network.js';
import { describeLines } from '../support/pod/apisix-log.js';
import type { TcpResult, TcpTls } from '../support/pod/worker-client.js';
import { meshLeaf, TEST_CA_TOKEN, withTestCa } from '../support/pod/mesh-ca.js';
import { FakeIstioCa } from '../support/fake-istio-ca.js';
import { createTestPki, type TestPki } from '../support/test-pki.js';
import { waitFor } from '../support/wait.js';
import { waitForHandoffs } from '../support/pod/handoffs.js';
import { MESH_TCP_TLS_PORT } from '../../webhook/injection/apisix-config.js';
import {
  blackHoleCluster, fqdn, inboundCluster, inboundPassthroughCluster, inboundPassthroughClusterIpv6, MeshResources, passthroughCluster, rbacNetworkFilter, virtualInbound,
  virtualOutbound,
} from '../support/istio-xds.js';

const NS = 'shop';
const NAME = 'db';
const POD_ID = `spiffe://cluster.local/ns/${NS}/sa/${NAME}`;
const SLEEP_ID = `spiffe://cluster.local/ns/${NS}/sa/sleep`;
const OTHER_ID = `spiffe://cluster.local/ns/${NS}/sa/other`;
const ELSEWHERE_ID = 'spiffe://cluster.local/ns/elsewhere/sa/sleep';
const STRICT_PORT = 5432;
const PERMISSIVE_PORT = 5433;
/** STRICT, ALLOW from the principal cluster.local/ns/shop/sa/sleep */
const PRINCIPAL_PORT = 5434;
/** STRICT, ALLOW from the namespace shop */
const NAMESPACE_PORT = 5435;
/** STRICT, its app listening on :: (IPv6 clients) */
const IPV6_PORT = 5436;
const PORTS = [STRICT_PORT, PERMISSIVE_PORT, PRINCIPAL_PORT, NAMESPACE_PORT, IPV6_PORT];
const BANNER = 'hello from the app\n';
/** Envoy's client ALPN for a TCP cluster with auto-mTLS */
const ENVOY_TCP_ALPN = ['istio-peer-exchange', 'istio'];
/**
 * nginx logs a handshake that verification refused at [crit] (its level for OpenSSL reasons it does
 * not list as the client's doing): expected exactly for the refused clients, on the stream TLS listener
 */
const REFUSED_HANDSHAKES = [
  /\[crit\] .*SSL_do_handshake\(\) failed \(SSL: error:0A0000C7:SSL routines::peer did not return a certificate\) while SSL handshaking, client: 127\.1[2-9]\d\.\d+\.\d+, server: 127\.0\.0\.1:15085$/,
  /\[crit\] .*SSL_do_handshake\(\) failed \(SSL: .*SSL routines::certificate verify failed\) while SSL handshaking, client: 127\.1[2-9]\d\.\d+\.\d+, server: 127\.0\.0\.1:15085$/,
];

// Istio's shapes of `from: source: principals: [cluster.local/ns/shop/sa/sleep]` (filter state, 1.22+)
// and `from: source: namespaces: [shop]` (the older authenticated principal_name form)
const allowSleep = rbacNetworkFilter('ALLOW', {
  'ns[shop]-policy[from-sleep]-rule[0]': {
    permissions: [{ and_rules: { rules: [{ any: true }] } }],
    principals: [{ and_ids: { ids: [{ or_ids: { ids: [{ filter_state: { key: 'io.istio.peer_principal', string_match: { exact: SLEEP_ID } } }] } }] } }],
  },
});
const allowShop = rbacNetworkFilter('ALLOW', {
  'ns[shop]-policy[from-shop]-rule[0]': {
    permissions: [{ and_rules: { rules: [{ any: true }] } }],
    principals: [{ and_ids: { ids: [{ or_ids: { ids: [{ authenticated: { principal_name: { safe_regex: { regex: '.*/ns/shop/.*' } } } }] } }] } }],
  },
});

function mesh(): MeshResources {
  const m = new MeshResources();
  m.cluster(passthroughCluster()).cluster(blackHoleCluster()).cluster(inboundPassthroughCluster()).cluster(inboundPassthroughClusterIpv6());
  for (const port of PORTS) m.cluster(inboundCluster(port));
  m.listener(
    virtualInbound([
      { port: STRICT_PORT, service: fqdn(NAME, NS), protocol: 'tcp', mtls: 'STRICT' },
      { port: PERMISSIVE_PORT, service: fqdn(NAME, NS), protocol: 'tcp', mtls: 'PERMISSIVE' },
      { port: PRINCIPAL_PORT, service: fqdn(NAME, NS), protocol: 'tcp', mtls: 'STRICT', filters: [allowSleep] },
      { port: NAMESPACE_PORT, service: fqdn(NAME, NS), protocol: 'tcp', mtls: 'STRICT', filters: [allowShop] },
      { port: IPV6_PORT, service: fqdn(NAME, NS), protocol: 'tcp', mtls: 'STRICT' },
    ], { ipv6: true }),
  );
  return m.listener(virtualOutbound());
}

describeWhenAvailable('inbound mTLS in front of TCP ports, on the real APISIX', missingForPod(), () => {
  let pod: RunningPod;
  let pki: TestPki;
  let ca: FakeIstioCa;
  let dir: string;
  let sleep: { cert: string; key: string };
  let other: { cert: string; key: string };
  let elsewhere: { cert: string; key: string };
  let foreign: { cert: string; key: string };
  let otherDomain: { cert: string; key: string };
  const served = async (port: number) => (await pod.app().served(`db-${port}`)).count;
  const noErrors = () => expect(pod.apisixErrors(REFUSED_HANDSHAKES), describeLines(pod.apisixErrors(REFUSED_HANDSHAKES))).toEqual([]);
  /** the client speaks first ("ping"), the app greets with its banner and echoes */
  const exchange = [{ send: 'ping\n', want: BANNER.length + 5 }];
  /** an Envoy-like mTLS connection (SNI of the outbound cluster, Istio's ALPN for TCP) */
  const envoyTls = (port: number, client: { cert: string; key: string } | undefined, extra: Partial<TcpTls> = {}): TcpTls => ({
    ca: pki.root.pem,
    servername: `outbound_.${port}_._.${fqdn(NAME, NS)}`,
    alpn: ENVOY_TCP_ALPN,
    ...(client ? { cert: client.cert, key: client.key } : {}),
    ...extra,
  });
  const mtls = (port: number, client: { cert: string; key: string } | undefined, extra: Partial<TcpTls> = {}, ip = POD_IP): Promise<TcpResult> =>
    pod.cluster.tcp(ip, port, exchange, 5000, undefined, envoyTls(port, client, extra));
  const plain = (port: number): Promise<TcpResult> => pod.cluster.tcp(POD_IP, port, exchange, 5000);
  const through = (r: TcpResult) => expect(Buffer.concat(r.received).toString(), JSON.stringify(r)).toBe(`${BANNER}ping\n`);
  const refused = (r: TcpResult) => {
    expect(r.closed, JSON.stringify(r)).toBe(true);
    expect(Buffer.concat(r.received).length).toBe(0);
  };

  beforeAll(async () => {
    pki = createTestPki();
    sleep = meshLeaf(pki.intermediate, SLEEP_ID);
    other = meshLeaf(pki.intermediate, OTHER_ID);
    elsewhere = meshLeaf(pki.intermediate, ELSEWHERE_ID);
    foreign = meshLeaf(createTestPki().intermediate, SLEEP_ID);
    // the mesh root, another trust domain: the chain's match_subject_alt_names (spiffe://cluster.local/) refuses it
    otherDomain = meshLeaf(pki.intermediate, 'spiffe://other.domain/ns/shop/sa/sleep');
    dir = mkdtempSync(join(tmpdir(), 'mtls-inbound-tcp-'));
    ca = new FakeIstioCa(pki);
    ca.requiredToken = TEST_CA_TOKEN;
    ca.expectedSpiffeId = POD_ID;
    // refuses until the first test has seen the sidecar without an identity
    ca.failure = { code: grpc.status.UNAVAILABLE, details: 'not yet' };
    await ca.start(`unix:${join(dir, 'ca.sock')}`);
    pod = await startPod({
      manifest: podManifest(NAME, NS, { app: NAME }, [{ name: 'db', ports: PORTS }]),
      xds: mesh().resources,
      clusterRelays: [{ ip: ISTIOD_IP, port: 15012, unixPath: join(dir, 'ca.sock') }],
      mutateInjected: withTestCa(pki.root.pem),
      dualStack: true,
    });
    expect(await pod.waitSynced(30_000)).toBe(true);
    await Promise.all(PORTS.map((port) => pod.app().serveTcp(`db-${port}`, port === IPV6_PORT ? '::' : '0.0.0.0', port, { banner: BANNER })));
  }, 120_000);
  afterAll(async () => {
    await pod?.stop();
    await ca?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('no workload certificate yet (the CA refuses): the handshake is refused, never served with another certificate or in plaintext; plaintext on PERMISSIVE still works', async () => {
    await waitFor(() => ca.requests.length > 0, 30_000, 'the agent asking the CA').catch((err: Error) => {
      throw new Error(`${err.message}; the agent's log:\n${pod.kubelet.logs('apisix-mesh-agent').slice(-3000)}`);
    });
    const early = await mtls(STRICT_PORT, sleep);
    refused(early);
    expect(early.peerSan, 'no certificate was presented').toBeUndefined();
    through(await plain(PERMISSIVE_PORT));
    expect(await served(STRICT_PORT)).toBe(0);
    expect(pod.apisixLog()).toMatch(/\[warn\] .*apisix-mesh: inbound mTLS handshake refused: /);
    noErrors();
    ca.failure = undefined;
    await pod.kubelet.waitReady(60_000);
    await waitFor(async () => Buffer.concat((await mtls(STRICT_PORT, sleep)).received).length > 0, 60_000, 'mTLS served once the certificate arrived');
  }, 150_000);

  it('STRICT, a mesh client: the app\'s echo, from 127.0.0.6; the server presents the pod\'s SPIFFE id', async () => {
    const before = await served(STRICT_PORT);
    const res = await mtls(STRICT_PORT, sleep);
    through(res);
    expect(res.peerSan).toBe(`URI:${POD_ID}`);
    const seen = await pod.app().served(`db-${STRICT_PORT}`);
    expect(seen.count).toBe(before + 1);
    expect(seen.requests.at(-1)).toMatchObject({ peer: '127.0.0.6' });
    noErrors();
  });

  it('STRICT: plaintext, no client certificate, a client certificate of another CA or of another trust domain: refused, the app sees nothing', async () => {
    const before = await served(STRICT_PORT);
    refused(await plain(STRICT_PORT));
    refused(await mtls(STRICT_PORT, undefined));
    refused(await mtls(STRICT_PORT, foreign));
    // a client that does not trust the pod's root does not get through either
    refused(await mtls(STRICT_PORT, sleep, { ca: createTestPki().root.pem }));
    // verified, but of another trust domain than the chain accepts: closed before anything is forwarded
    refused(await mtls(STRICT_PORT, otherDomain));
    expect(await served(STRICT_PORT)).toBe(before);
    // refused by the TLS listener's handshake and its SAN check, not by the front (a control: the mesh client passes)
    for (const refusal of REFUSED_HANDSHAKES) expect(pod.apisixLog()).toMatch(new RegExp(refusal.source, 'm'));
    expect(pod.apisixLog()).toMatch(/\[warn\] .*inbound mTLS connection from \S+ refused: the peer spiffe:\/\/other\.domain\/ns\/shop\/sa\/sleep matches none of the chain's subject alt names/);
    through(await mtls(STRICT_PORT, sleep));
    noErrors();
  });

  it('each mTLS connection is handed to the stream TLS listener in the worker whose front accepted it (handoff_steering.lua)', async () => {
    const connections = 12;
    // the app's echo, then the connection stays open (the extra bytes never come) until the timeout
    const held = Array.from({ length: connections }, () =>
      pod.cluster.tcp(POD_IP, STRICT_PORT, [{ send: 'ping\n', want: 1 << 20 }], 3_000, undefined, envoyTls(STRICT_PORT, sleep)));
    const seen = await waitForHandoffs(pod.network.pod, MESH_TCP_TLS_PORT, connections);
    for (const r of await Promise.all(held)) expect(Buffer.concat(r.received).toString()).toBe(`${BANNER}ping\n`);
    expect(seen.length, JSON.stringify(seen)).toBe(connections);
    expect(seen.filter((h) => h.front !== h.listener), JSON.stringify(seen)).toEqual([]);
    noErrors();
  }, 30_000);

  it('PERMISSIVE: mTLS and plaintext on the same port both reach the app', async () => {
    const before = await served(PERMISSIVE_PORT);
    const secure = await mtls(PERMISSIVE_PORT, sleep);
    through(secure);
    expect(secure.peerSan).toBe(`URI:${POD_ID}`);
    through(await plain(PERMISSIVE_PORT));
    expect(await served(PERMISSIVE_PORT)).toBe(before + 2);
    noErrors();
  });

  it('network RBAC ALLOW on a principal: that peer passes, another mesh peer is closed before the app sees it; plaintext has no principal', async () => {
    const denials = () => pod.apisixLog().split('\n').filter((l) => l.includes('denied by network RBAC'));
    const before = denials().length;
    refused(await mtls(PRINCIPAL_PORT, other));
    expect(await served(PRINCIPAL_PORT)).toBe(0);
    through(await mtls(PRINCIPAL_PORT, sleep));
    expect(await served(PRINCIPAL_PORT)).toBe(1);
    const logged = denials().slice(before);
    expect(logged).toHaveLength(1);
    expect(logged[0]).toMatch(new RegExp(`\\[warn\\].*connection from \\S+ \\(${OTHER_ID}\\) to ${POD_IP}:${PRINCIPAL_PORT} denied by network RBAC filter envoy\\.filters\\.network\\.rbac`));
    noErrors();
  });

  it('network RBAC ALLOW on a source namespace: a peer of that namespace passes, one of another namespace is closed', async () => {
    refused(await mtls(NAMESPACE_PORT, elsewhere));
    expect(await served(NAMESPACE_PORT)).toBe(0);
    through(await mtls(NAMESPACE_PORT, other));
    expect(await served(NAMESPACE_PORT)).toBe(1);
    noErrors();
  });

  it('a process of the pod dialling the stream TLS listener directly (no captured connection behind it) is closed after the handshake, even with a mesh certificate', async () => {
    const before = await Promise.all(PORTS.map(served));
    const direct = await pod.app().tcp('127.0.0.1', 15085, exchange, 5000, undefined, envoyTls(STRICT_PORT, sleep));
    refused(direct);
    expect(await Promise.all(PORTS.map(served))).toEqual(before);
    expect(pod.apisixLog()).toMatch(/\[warn\] .*apisix-mesh: connection to the TCP mTLS listener from 127\.0\.0\.1 without a captured connection: refused/);
    noErrors();
  });

  it('IPv6: a mesh client of the pod\'s IPv6 address gets the app\'s echo from ::6; plaintext and a foreign CA are refused', async () => {
    const res = await mtls(IPV6_PORT, sleep, {}, POD_IP6);
    through(res);
    expect(res.peerSan).toBe(`URI:${POD_ID}`);
    const seen = await pod.app().served(`db-${IPV6_PORT}`);
    expect(seen.requests.map((r) => r.peer)).toEqual(['::6']);
    refused(await pod.cluster.tcp(POD_IP6, IPV6_PORT, exchange, 5000));
    refused(await mtls(IPV6_PORT, foreign, {}, POD_IP6));
    expect(await served(IPV6_PORT)).toBe(1);
    noErrors();
  });
  it('Istio\'s TCP metrics: mTLS connections carry the verified peer, our SPIFFE id and mutual_tls with their plaintext bytes; plaintext on PERMISSIVE says none; a principal denied after the handshake is counted', async () => {
    const scrape = async () => {
      const res = await pod.cluster.http({ url: `http://${POD_IP}:15020/stats/prometheus` });
      if (!('status' in res)) throw new Error(res.error);
      return res.body.split('\n');
    };
    const value = (lines: string[], name: string, labels: string[]) =>
      lines.filter((l) => l.startsWith(`${name}{`) && labels.every((x) => l.includes(x))).reduce((n, l) => n + Number(l.split(' ').at(-1)), 0);
    const viaMtls = ['reporter="destination"', `source_principal="${SLEEP_ID}"`, `destination_principal="${POD_ID}"`, 'connection_security_policy="mutual_tls"', 'request_protocol="tcp"'];
    const plaintext = ['reporter="destination"', 'source_principal="unknown"', 'connection_security_policy="none"'];
    const denied = (lines: string[]) => value(lines.map((l) => l.replace(/^apisix_mesh_network_rbac_denied_total /, 'apisix_mesh_network_rbac_denied_total{} ')), 'apisix_mesh_network_rbac_denied_total', []);
    const before = await scrape();
    for (let i = 0; i < 2; i++) through(await mtls(PERMISSIVE_PORT, sleep));
    through(await plain(PERMISSIVE_PORT));
    refused(await mtls(PRINCIPAL_PORT, other));
    let after: string[] = [];
    await waitFor(async () => {
      after = await scrape();
      return value(after, 'istio_tcp_connections_closed_total', viaMtls) - value(before, 'istio_tcp_connections_closed_total', viaMtls) === 2
        && value(after, 'istio_tcp_connections_closed_total', plaintext) - value(before, 'istio_tcp_connections_closed_total', plaintext) === 1;
    }, 30_000, 'the connections counted closed');
    const delta = (name: string, labels: string[]) => value(after, name, labels) - value(before, name, labels);
    expect(delta('istio_tcp_connections_opened_total', viaMtls)).toBe(2);
    expect(delta('istio_tcp_received_bytes_total', viaMtls)).toBe(2 * 5);
    expect(delta('istio_tcp_sent_bytes_total', viaMtls)).toBe(2 * (BANNER.length + 5));
    expect(delta('istio_tcp_received_bytes_total', plaintext)).toBe(5);
    expect(denied(after) - denied(before)).toBe(1);
    noErrors();
  });
});
