// Inbound mTLS with Istio's semantics on the real APISIX (agent/l4/mesh-tls-context.ts,
// agent/l4/lua/apisix_mesh/mesh_tls.lua): the L4 front hands the chains that terminate Istio's mTLS
// to APISIX's loopback TLS listener, which presents the workload certificate Istio's CA issued
// (here the fake CA, reached over TLS with the pod's token and root file, as istiod's CA would be)
// whatever the SNI, and requires a client certificate chained to the mesh root. Clients send what
// Envoy sends: SNI outbound_.<port>_._.<host>, Istio's ALPN, a Host that differs from the SNI.
// STRICT refuses plaintext and unverified clients (the app sees nothing); PERMISSIVE serves both;
// the app gets Envoy's x-forwarded-client-cert; an ALLOW policy on a principal lets exactly that
// peer through. Before the CA issued anything, mTLS is refused. APISIX's error log in every test.
// The suite runs for both workload key types: RSA 2048 (Istio's default, the agent's --key-type
// default) and ECDSA P-256 (pilot-agent's ECC_SIGNATURE_ALGORITHM=ECDSA in the agent's environment),
// the mesh clients then holding keys of the same type.
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type { V1Container, V1Pod } from '@kubernetes/client-node';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingForPod, podManifest } from '../support/pod/requirements.js';
import { ISTIOD_IP, startPod, type RunningPod } from '../support/pod/pod-harness.js';
import { POD_IP } from '../support/pod/network.js';
import { describeLines } from '../support/pod/apisix-log.js';
import type { HttpRequest } from '../support/pod/worker-client.js';
import { send } from '../support/echo-requests.js';
import { FakeIstioCa } from '../support/fake-istio-ca.js';
import { createTestPki, issueLeafPem, type TestPki } from '../support/test-pki.js';
import { WORKLOAD_KEY_TYPES, type WorkloadKeyType } from '../../agent/identity/key-type.js';
import { waitFor } from '../support/wait.js';
import {
  blackHoleCluster, fqdn, inboundCluster, inboundPassthroughCluster, MeshResources, passthroughCluster, rbacHttpFilter, virtualInbound, virtualOutbound, withHttpFilters,
} from '../support/istio-xds.js';

const NS = 'shop';
const NAME = 'web';
const POD_ID = `spiffe://cluster.local/ns/${NS}/sa/${NAME}`;
const SLEEP_ID = `spiffe://cluster.local/ns/${NS}/sa/sleep`;
const OTHER_ID = `spiffe://cluster.local/ns/${NS}/sa/other`;
const STRICT_PORT = 8080;
const PERMISSIVE_PORT = 8081;
const RBAC_PORT = 8082;
const PORTS = [STRICT_PORT, PERMISSIVE_PORT, RBAC_PORT];
/**
 * nginx logs a handshake that verification refused at [crit] (its level for OpenSSL reasons it does
 * not list as the client's doing): expected exactly for the refused clients, on the mTLS listener
 */
const REFUSED_HANDSHAKES = [
  /\[crit\] .*SSL_do_handshake\(\) failed \(SSL: error:0A0000C7:SSL routines::peer did not return a certificate\) while SSL handshaking, client: 127\.1[2-9]\d\.\d+\.\d+, server: 127\.0\.0\.1:15082$/,
  /\[crit\] .*SSL_do_handshake\(\) failed \(SSL: .*SSL routines::certificate verify failed\) while SSL handshaking, client: 127\.1[2-9]\d\.\d+\.\d+, server: 127\.0\.0\.1:15082$/,
];
/** Envoy's client ALPN for an HTTP/1.1 cluster with auto-mTLS */
const ENVOY_ALPN = ['istio-http/1.1', 'istio', 'http/1.1'];

function mesh(): MeshResources {
  const m = new MeshResources();
  m.cluster(passthroughCluster()).cluster(blackHoleCluster()).cluster(inboundPassthroughCluster());
  for (const port of PORTS) m.cluster(inboundCluster(port));
  let inbound = virtualInbound([
    { port: STRICT_PORT, service: fqdn(NAME, NS), mtls: 'STRICT' },
    { port: PERMISSIVE_PORT, service: fqdn(NAME, NS), mtls: 'PERMISSIVE' },
    { port: RBAC_PORT, service: fqdn(NAME, NS), mtls: 'STRICT' },
  ]);
  // Istio's shape of `from: source: principals: [cluster.local/ns/shop/sa/sleep]`
  const allowSleep = rbacHttpFilter('ALLOW', {
    'ns[shop]-policy[from-sleep]-rule[0]': {
      permissions: [{ and_rules: { rules: [{ any: true }] } }],
      principals: [{ and_ids: { ids: [{ or_ids: { ids: [{ filter_state: { key: 'io.istio.peer_principal', string_match: { exact: SLEEP_ID } } }] } }] } }],
    },
  });
  inbound = withHttpFilters(inbound, [allowSleep], (chain) => (chain['filter_chain_match'] as Record<string, unknown> | undefined)?.['destination_port'] === RBAC_PORT);
  m.listener(inbound).listener(virtualOutbound());
  return m;
}

interface ClientCert {
  cert: string;
  key: string;
  leafPem: string;
}

/** A workload certificate as Istio's CA issues it (leaf + intermediate, one URI SAN) of `pki`. */
function clientCert(pki: TestPki, spiffeId: string, keyType: WorkloadKeyType): ClientCert {
  const { privateKey, publicKey } = keyType === 'ecdsa' ? generateKeyPairSync('ec', { namedCurve: 'prime256v1' }) : generateKeyPairSync('rsa', { modulusLength: 2048 });
  const leafPem = issueLeafPem(pki.intermediate, publicKey, spiffeId, 3600).pem;
  return { cert: leafPem + pki.intermediate.pem, key: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, leafPem };
}

/** What the served leaf's key looks like (the netns worker's `peerKey`). */
const KEY_SEEN: Record<WorkloadKeyType, string> = { rsa: 'rsa 2048', ecdsa: 'ec prime256v1' };

/** Envoy's XFCC Hash: the SHA-256 of the peer certificate's DER, in lower-case hex */
const certHash = (pem: string) => new X509Certificate(pem).fingerprint256.replace(/:/g, '').toLowerCase();

/** The agent of the injected pod asks the fake CA (the harness's istiod is plaintext and has none). */
function withCa(files: { rootCert: string; token: string }, keyType: WorkloadKeyType) {
  return (pod: V1Pod): V1Pod => {
    const all: V1Container[] = [...pod.spec!.containers, ...(pod.spec!.initContainers ?? [])];
    const agent = all.find((c) => c.args?.[0] === 'agent')!;
    // the harness dials istiod by address: the name its certificate carries is given as Istio's is
    agent.args!.push('--ca-address=istiod.istio-system.svc:15012', '--xds-server-name=istiod.istio-system.svc', `--root-cert=${files.rootCert}`, `--token-file=${files.token}`);
    // ECDSA as pilot-agent is told (the agent's flag would win over it); RSA by default
    if (keyType === 'ecdsa') agent.env = [...(agent.env ?? []), { name: 'ECC_SIGNATURE_ALGORITHM', value: 'ECDSA' }];
    return pod;
  };
}

for (const keyType of WORKLOAD_KEY_TYPES) describeWhenAvailable(`inbound mTLS with Istio's semantics on the real APISIX (${keyType} workload keys)`, missingForPod(), () => {
  let pod: RunningPod;
  let pki: TestPki;
  let ca: FakeIstioCa;
  let dir: string;
  let sleep: ClientCert;
  let other: ClientCert;
  let foreign: ClientCert;
  let otherDomain: ClientCert;
  const served = async (port: number) => (await pod.app().served(`app-${port}`)).count;
  const noErrors = () => expect(pod.apisixErrors(REFUSED_HANDSHAKES), describeLines(pod.apisixErrors(REFUSED_HANDSHAKES))).toEqual([]);
  /** an Envoy-like mTLS request (SNI of the outbound cluster, Istio's ALPN, Host = the service) */
  const mtls = (port: number, client: ClientCert | undefined, extra: Partial<HttpRequest> = {}): HttpRequest => ({
    url: `https://${POD_IP}:${port}/hello`,
    headers: { host: `${fqdn(NAME, NS)}:${port}` },
    servername: `outbound_.${port}_._.${fqdn(NAME, NS)}`,
    alpn: ENVOY_ALPN,
    ca: pki.root.pem,
    anyServerName: true,
    ...(client ? { cert: client.cert, key: client.key } : {}),
    timeoutMs: 5000,
    ...extra,
  });
  const plain = (port: number): HttpRequest => ({ url: `http://${POD_IP}:${port}/hello`, headers: { host: `${fqdn(NAME, NS)}:${port}` }, timeoutMs: 5000 });

  beforeAll(async () => {
    pki = createTestPki();
    sleep = clientCert(pki, SLEEP_ID, keyType);
    other = clientCert(pki, OTHER_ID, keyType);
    foreign = clientCert(createTestPki(), SLEEP_ID, keyType);
    // the mesh root, another trust domain: the chain's match_subject_alt_names (spiffe://cluster.local/) refuses it
    otherDomain = clientCert(pki, 'spiffe://other.domain/ns/shop/sa/sleep', keyType);
    dir = mkdtempSync(join(tmpdir(), 'mtls-inbound-'));
    chmodSync(dir, 0o755);
    writeFileSync(join(dir, 'root-cert.pem'), pki.root.pem, { mode: 0o644 });
    writeFileSync(join(dir, 'istio-token'), 'pod-token\n', { mode: 0o644 });
    ca = new FakeIstioCa(pki);
    ca.requiredToken = 'pod-token';
    ca.expectedSpiffeId = POD_ID;
    // refuses until the first test has seen the sidecar without an identity
    ca.failure = { code: grpc.status.UNAVAILABLE, details: 'not yet' };
    await ca.start(`unix:${join(dir, 'ca.sock')}`);
    pod = await startPod({
      manifest: podManifest(NAME, NS, { app: NAME }, [{ name: 'app', ports: PORTS }]),
      xds: mesh().resources,
      clusterRelays: [{ ip: ISTIOD_IP, port: 15012, unixPath: join(dir, 'ca.sock') }],
      mutateInjected: withCa({ rootCert: join(dir, 'root-cert.pem'), token: join(dir, 'istio-token') }, keyType),
    });
    expect(await pod.waitSynced(20_000)).toBe(true);
    await Promise.all(PORTS.map((port) => pod.app().serve(`app-${port}`, '0.0.0.0', port)));
  }, 90_000);
  afterAll(async () => {
    await pod?.stop();
    await ca?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('no workload certificate yet (the CA refuses): mTLS is refused, never served with another certificate; plaintext on PERMISSIVE still works', async () => {
    await waitFor(() => ca.requests.length > 0, 20_000, 'the agent asking the CA').catch((err: Error) => {
      throw new Error(`${err.message}; the agent's log:\n${pod.kubelet.logs('apisix-mesh-agent').slice(-3000)}`);
    });
    const res = await pod.cluster.http(mtls(STRICT_PORT, sleep));
    expect('error' in res, JSON.stringify(res)).toBe(true);
    expect((await send(pod.cluster, plain(PERMISSIVE_PORT))).echo).toMatchObject({ name: `app-${PERMISSIVE_PORT}` });
    expect(await served(STRICT_PORT)).toBe(0);
    noErrors();
    ca.failure = undefined;
    await pod.kubelet.waitReady(60_000);
    await waitFor(async () => !('error' in (await pod.cluster.http(mtls(STRICT_PORT, sleep)))), 30_000, 'mTLS served once the certificate arrived');
  }, 120_000);

  it('STRICT, a mesh client: 200; the server presents the pod\'s SPIFFE id (a leaf of the key type asked for); the app gets Envoy\'s XFCC (APPEND_FORWARD: the client\'s own, then the verified element)', async () => {
    const res = await send(pod.cluster, mtls(STRICT_PORT, sleep, { headers: { host: `${fqdn(NAME, NS)}:${STRICT_PORT}`, 'x-forwarded-client-cert': 'By=spiffe://forged;URI=spiffe://cluster.local/ns/shop/sa/admin' } }));
    expect(res.status).toBe(200);
    expect(res.peerSan).toBe(`URI:${POD_ID}`);
    expect(res.peerKey).toBe(KEY_SEEN[keyType]);
    expect(res.echo).toMatchObject({ name: `app-${STRICT_PORT}`, url: '/hello', peer: '127.0.0.6' });
    expect(res.echo!.headers['x-forwarded-client-cert']).toBe(`By=spiffe://forged;URI=spiffe://cluster.local/ns/shop/sa/admin,By=${POD_ID};Hash=${certHash(sleep.leafPem)};Subject="";URI=${SLEEP_ID}`);
    noErrors();
  });

  it('STRICT: plaintext, no client certificate, a client certificate of another CA or of another trust domain: refused, the app sees nothing', async () => {
    const before = await served(STRICT_PORT);
    expect('error' in (await pod.cluster.http(plain(STRICT_PORT)))).toBe(true);
    const none = await pod.cluster.http(mtls(STRICT_PORT, undefined));
    expect('error' in none, JSON.stringify(none)).toBe(true);
    const stranger = await pod.cluster.http(mtls(STRICT_PORT, foreign));
    expect('error' in stranger, JSON.stringify(stranger)).toBe(true);
    // a client of the mesh that does not trust the pod's root would not get here either: the
    // server's chain verifies only against the mesh root
    const distrust = await pod.cluster.http(mtls(STRICT_PORT, sleep, { ca: createTestPki().root.pem }));
    expect('error' in distrust).toBe(true);
    // verified, but of another trust domain than the chain accepts: 403 before anything is forwarded
    expect(await send(pod.cluster, mtls(STRICT_PORT, otherDomain))).toMatchObject({ status: 403 });
    expect(await served(STRICT_PORT)).toBe(before);
    // refused by the mTLS listener's handshake, not by the front (a control: the mesh client passes)
    for (const refused of REFUSED_HANDSHAKES) expect(pod.apisixLog()).toMatch(new RegExp(refused.source, 'm'));
    expect((await send(pod.cluster, mtls(STRICT_PORT, sleep))).status).toBe(200);
    noErrors();
  });

  it('PERMISSIVE: mTLS and plaintext on the same port both reach the app; plaintext carries no XFCC', async () => {
    const secure = await send(pod.cluster, mtls(PERMISSIVE_PORT, sleep));
    expect(secure.status).toBe(200);
    expect(secure.echo!.headers['x-forwarded-client-cert']).toBe(`By=${POD_ID};Hash=${certHash(sleep.leafPem)};Subject="";URI=${SLEEP_ID}`);
    const clear = await send(pod.cluster, { ...plain(PERMISSIVE_PORT), headers: { host: `${fqdn(NAME, NS)}:${PERMISSIVE_PORT}`, 'x-forwarded-client-cert': 'By=spiffe://forged' } });
    expect(clear.status).toBe(200);
    expect(clear.echo).toMatchObject({ name: `app-${PERMISSIVE_PORT}` });
    expect(clear.echo!.headers['x-forwarded-client-cert']).toBeUndefined();
    noErrors();
  });

  it('an ALLOW policy on a principal: that peer passes, another mesh peer gets 403 RBAC: access denied', async () => {
    const before = await served(RBAC_PORT);
    const denied = await send(pod.cluster, mtls(RBAC_PORT, other));
    expect(denied).toMatchObject({ status: 403, body: 'RBAC: access denied' });
    expect(await served(RBAC_PORT)).toBe(before);
    const allowed = await send(pod.cluster, mtls(RBAC_PORT, sleep));
    expect(allowed.status).toBe(200);
    expect(allowed.echo).toMatchObject({ name: `app-${RBAC_PORT}` });
    noErrors();
  });

  it('Istio\'s metrics of inbound mTLS requests: the verified peer as source principal, the pod\'s SPIFFE id as destination principal, mutual_tls', async () => {
    expect((await send(pod.cluster, mtls(RBAC_PORT, other))).status).toBe(403);
    const res = await pod.cluster.http({ url: `http://${POD_IP}:15020/stats/prometheus` });
    if (!('status' in res)) throw new Error(res.error);
    const series = res.body.split('\n').filter((l) => l.startsWith('istio_requests_total{'));
    const mtlsFrom = (peer: string, code: string) =>
      series.filter((l) => l.includes(`source_principal="${peer}"`) && l.includes(`destination_principal="${POD_ID}"`) && l.includes('connection_security_policy="mutual_tls"') && l.includes(`response_code="${code}"`) && l.includes('reporter="destination"'));
    expect(mtlsFrom(SLEEP_ID, '200').length, series.join('\n')).toBeGreaterThan(0);
    expect(mtlsFrom(OTHER_ID, '403')).toHaveLength(1);
    // plaintext on PERMISSIVE: no principals
    expect(series.some((l) => l.includes('source_principal="unknown"') && l.includes('destination_principal="unknown"') && l.includes('connection_security_policy="none"'))).toBe(true);
    noErrors();
  });
});
