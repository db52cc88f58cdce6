// Outbound mutual TLS with Istio's semantics on the real APISIX (agent/mtls/, the TLS relay in
// agent/l4/lua/apisix_mesh/tls_origin.lua). The agent gets the pod's certificate from a fake Istio CA
// (a test PKI shaped like Istio's: root → intermediate → URI-SAN-only leaves) and hands it to APISIX;
// the app sends plain HTTP to mesh services whose clusters istiod marks ISTIO_MUTUAL or auto-mTLS,
// served by Node HTTPS servers that require a client certificate of the mesh. Checked: the server
// sees the pod's SPIFFE ID, the cluster's SNI and Envoy's ALPN; a server with another SPIFFE ID or
// a foreign CA gets no request; auto-mTLS uses TLS only for endpoints labelled tlsMode istio; before
// the pod has a certificate, nothing goes out. APISIX's error log in every test. The suite runs for
// both workload key types (agent --key-type rsa|ecdsa), the mesh servers holding keys of the same type.
import { mkdtempSync, rmSync } from 'node:fs';
import type { Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingForPod, podManifest } from '../support/pod/requirements.js';
import { ISTIOD_IP, startPod, type RunningPod } from '../support/pod/pod-harness.js';
import { RELAY_CLOSED_LINES, describeLines } from '../support/pod/apisix-log.js';
import { send, type Answer } from '../support/echo-requests.js';
import { createTestPki } from '../support/test-pki.js';
import { meshLeaf as leaf, TEST_CA_TOKEN, unixBridge, withTestCa } from '../support/pod/mesh-ca.js';
import { FakeIstioCa } from '../support/fake-istio-ca.js';
import { WORKLOAD_KEY_TYPES, type WorkloadKeyType } from '../../agent/identity/key-type.js';
import {
  allowAnyVirtualHost, blackHoleCluster, edsCluster, fqdn, httpRoute, MeshResources, outboundCluster, outboundHttpListener, outboundTcpListener,
  passthroughCluster, routeConfiguration, serviceVirtualHost, virtualOutbound, withIstioMutual, type Endpoint,
} from '../support/istio-xds.js';

const NS = 'test';
const POD = 'client';
const POD_SPIFFE_ID = `spiffe://cluster.local/ns/${NS}/sa/${POD}`;
const SERVER_ID = `spiffe://cluster.local/ns/${NS}/sa/server`;
const ENDPOINT_PORT = 8443;

/** Each service: its VIP, its endpoints (server names) and how istiod set its cluster's TLS. */
const services = {
  secure: { vip: '10.96.30.1', mode: 'ISTIO_MUTUAL', endpoints: [['secure-server', '10.244.30.1', true]] },
  impostor: { vip: '10.96.30.2', mode: 'ISTIO_MUTUAL', endpoints: [['impostor', '10.244.30.2', true]] },
  foreign: { vip: '10.96.30.3', mode: 'ISTIO_MUTUAL', endpoints: [['foreign-ca', '10.244.30.3', true]] },
  auto: { vip: '10.96.30.4', mode: 'auto', endpoints: [['auto-sidecar', '10.244.30.4', true], ['auto-plain', '10.244.30.5', false]] },
} as const;
type Service = keyof typeof services;
/** A mesh TCP service (a TCP proxy chain to an ISTIO_MUTUAL cluster), reached through the L4 front. */
const DB = { vip: '10.96.30.9', port: 5432, endpoint: '10.244.30.9' };
const DB_CLUSTER = outboundCluster(DB.port, fqdn('db', NS));
const cluster = (s: Service) => outboundCluster(80, fqdn(s, NS));

function mesh(): MeshResources {
  const m = new MeshResources();
  for (const [name, def] of Object.entries(services) as Array<[Service, (typeof services)[Service]]>) {
    const endpoints: Endpoint[] = def.endpoints.map(([, ip, sidecar]) => ({ ip, port: ENDPOINT_PORT, tlsModeIstio: sidecar }));
    m.cluster(withIstioMutual(edsCluster(cluster(name)), [SERVER_ID], def.mode), endpoints);
  }
  m.route(
    routeConfiguration(80, [
      ...(Object.keys(services) as Service[]).map((s) => serviceVirtualHost(fqdn(s, NS), 80, services[s].vip, [httpRoute('default', { prefix: '/' }, { cluster: cluster(s) })])),
      allowAnyVirtualHost(),
    ]),
  );
  m.cluster(withIstioMutual(edsCluster(DB_CLUSTER), [SERVER_ID], 'ISTIO_MUTUAL'), [{ ip: DB.endpoint, port: DB.port }]);
  m.listener(outboundTcpListener(DB.vip, DB.port, DB_CLUSTER));
  m.cluster(passthroughCluster()).cluster(blackHoleCluster());
  m.listener(outboundHttpListener(80)).listener(virtualOutbound());
  return m;
}

/**
 * APISIX error lines the refusals cause on purpose (no other line is accepted): the relay's own
 * reason, and nginx's report of the closed upstream connection (APISIX answers 502).
 */
const REFUSED = {
  identity: /\[error\] .*TLS relay 127\.\d+\.\d+\.\d+: outbound\|80\|\|secure\.test\.svc\.cluster\.local endpoint 10\.244\.30\.1:8443 refused: mutual TLS needs the workload identity/,
  impostor: /\[error\] .*TLS relay 127\.\d+\.\d+\.\d+: outbound\|80\|\|impostor\.test\.svc\.cluster\.local endpoint 10\.244\.30\.2:8443 refused: its certificate's SANs \(URI:spiffe:\/\/cluster\.local\/ns\/test\/sa\/other\) match none of the cluster's/,
  foreign: /\[error\] .*TLS relay 127\.\d+\.\d+\.\d+: outbound\|80\|\|foreign\.test\.svc\.cluster\.local endpoint 10\.244\.30\.3:8443 refused: its certificate chain does not verify against the mesh roots/,
};
const CLOSED = RELAY_CLOSED_LINES;
/** How the servers see the pod's certificate key (the netns worker's `clientKey`). */
const KEY_SEEN: Record<WorkloadKeyType, string> = { rsa: 'rsa 2048', ecdsa: 'ec prime256v1' };

for (const keyType of WORKLOAD_KEY_TYPES) describeWhenAvailable(`outbound mTLS from the APISIX sidecar with Istio's semantics (real APISIX, ${keyType} workload keys)`, missingForPod(), () => {
  let pod: RunningPod;
  let ca: FakeIstioCa;
  let bridge: Server;
  let dir: string;
  const app = () => pod.app();
  const errors = (explained: RegExp[]) => {
    const lines = pod.apisixErrors(explained);
    expect(lines, describeLines(lines)).toEqual([]);
  };
  const get = (s: Service, path = '/') => send(app(), { url: `http://${services[s].vip}${path}` });

  beforeAll(async () => {
    const pki = createTestPki();
    const foreign = createTestPki();
    ca = new FakeIstioCa(pki);
    ca.requiredToken = TEST_CA_TOKEN;
    ca.expectedSpiffeId = POD_SPIFFE_ID;
    dir = mkdtempSync(join(tmpdir(), 'mtls-outbound-'));
    bridge = await unixBridge(join(dir, 'ca.sock'), await ca.start());
    pod = await startPod({
      manifest: podManifest(POD, NS, { app: POD }),
      xds: mesh().resources,
      clusterAddresses: [...Object.values(services).flatMap((s) => [s.vip, ...s.endpoints.map(([, ip]) => ip)]), DB.vip, DB.endpoint],
      mutateInjected: withTestCa(pki.root.pem, keyType),
    });
    const meshRoot = pki.root.pem;
    await Promise.all([
      pod.cluster.serveTls('secure-server', '10.244.30.1', ENDPOINT_PORT, { ...leaf(pki.intermediate, SERVER_ID, 3600, keyType), ca: meshRoot }),
      pod.cluster.serveTls('impostor', '10.244.30.2', ENDPOINT_PORT, { ...leaf(pki.intermediate, `spiffe://cluster.local/ns/${NS}/sa/other`, 3600, keyType), ca: meshRoot }),
      // another mesh's CA naming the expected identity; it accepts the pod's certificate, so the
      // handshake completes and only the relay's check stands between it and the request
      pod.cluster.serveTls('foreign-ca', '10.244.30.3', ENDPOINT_PORT, { ...leaf(foreign.intermediate, SERVER_ID, 3600, keyType), ca: meshRoot }),
      pod.cluster.serveTls('auto-sidecar', '10.244.30.4', ENDPOINT_PORT, { ...leaf(pki.intermediate, SERVER_ID, 3600, keyType), ca: meshRoot }),
      pod.cluster.serve('auto-plain', '10.244.30.5', ENDPOINT_PORT),
      pod.cluster.serveTcp('db', DB.endpoint, DB.port, { tls: { ...leaf(pki.intermediate, SERVER_ID, 3600, keyType), ca: meshRoot } }),
    ]);
    expect(await pod.waitSynced(20_000)).toBe(true);
  }, 60_000);
  afterAll(async () => {
    await pod?.stop();
    await ca?.stop();
    bridge?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('before the pod has a workload certificate, an ISTIO_MUTUAL upstream is refused: 502, and nothing reaches the server', async () => {
    // the CA is not reachable yet (its relay comes in the next test): the agent keeps retrying.
    // APISIX's workers may still be starting (the pod is not ready without a certificate): until
    // the capture port answers, the connection is reset, and a worker that has not read the routes
    // yet answers 404 (waitSynced saw one worker's view)
    let res: Answer | undefined;
    for (let i = 0; i < 50; i++) {
      res = await get('secure').catch(() => undefined);
      if (res && res.status !== 404) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(res!.status).toBe(502);
    expect((await pod.cluster.served('secure-server')).connections).toBe(0);
    errors([REFUSED.identity, ...CLOSED]);
  });

  it('ISTIO_MUTUAL: the server gets the pod\'s certificate (its SPIFFE ID), the cluster\'s SNI and Envoy\'s ALPN; 200', async () => {
    await pod.cluster.relay(ISTIOD_IP, 15012, join(dir, 'ca.sock'));
    await pod.kubelet.waitReady(30_000); // readiness waits for the first certificate
    expect(ca.issued.length).toBeGreaterThanOrEqual(1);
    // the identity reaches APISIX's stream workers a moment after the agent has it
    let res = await get('secure', '/hello');
    for (let i = 0; i < 30 && res.status === 502; i++) {
      await new Promise((r) => setTimeout(r, 200));
      res = await get('secure', '/hello');
    }
    expect(res.status).toBe(200);
    expect(res.echo).toMatchObject({
      name: 'secure-server',
      url: '/hello',
      clientSan: `URI:${POD_SPIFFE_ID}`,
      clientKey: KEY_SEEN[keyType],
      servername: `outbound_.80_._.${fqdn('secure', NS)}`,
      alpn: 'http/1.1',
      alpnOffered: ['istio-http/1.1', 'istio', 'http/1.1'],
      headers: expect.objectContaining({ host: services.secure.vip }),
    });
    // keep-alive through the relay: more requests, all answered
    const more = await Promise.all(Array.from({ length: 5 }, () => get('secure')));
    expect(more.map((r) => r.status)).toEqual([200, 200, 200, 200, 200]);
    errors([REFUSED.identity, ...CLOSED]);
  }, 60_000);

  it('a server presenting another SPIFFE ID, or a chain of another CA, gets no request: 502', async () => {
    expect((await get('impostor')).status).toBe(502);
    expect((await get('foreign')).status).toBe(502);
    expect((await pod.cluster.served('impostor')).count).toBe(0);
    expect((await pod.cluster.served('foreign-ca')).count).toBe(0);
    // the relay refused them for their identity (after the handshake, before any data)
    expect((await pod.cluster.served('impostor')).connections).toBeGreaterThan(0);
    expect(pod.apisixLog()).toMatch(REFUSED.impostor);
    expect(pod.apisixLog()).toMatch(REFUSED.foreign);
    errors([REFUSED.identity, REFUSED.impostor, REFUSED.foreign, ...CLOSED]);
  });

  it('auto-mTLS: TLS to the endpoint labelled tlsMode istio, plaintext to the one without a sidecar', async () => {
    const answers = await Promise.all(Array.from({ length: 12 }, () => get('auto')));
    expect(answers.map((a) => a.status)).toEqual(Array(12).fill(200));
    const byServer = new Map(answers.map((a) => [a.echo!.name, a.echo!]));
    expect([...byServer.keys()].sort()).toEqual(['auto-plain', 'auto-sidecar']);
    // every answer of the sidecar endpoint came over mutual TLS 1.3 with the pod's identity and the
    // cluster's SNI (a resumed session too: a TLS 1.2 resumption would show no SNI in Node)
    const sidecar = answers.filter((a) => a.echo!.name === 'auto-sidecar').map((a) => a.echo!);
    const want = { clientSan: `URI:${POD_SPIFFE_ID}`, servername: `outbound_.80_._.${fqdn('auto', NS)}`, protocol: 'TLSv1.3' };
    expect(sidecar.map((e) => ({ clientSan: e.clientSan, servername: e.servername, protocol: e.protocol })), JSON.stringify(sidecar)).toEqual(sidecar.map(() => want));
    // the plain server is an HTTP server: a TLS client would not have got an answer from it
    expect(byServer.get('auto-plain')!.clientSan).toBeUndefined();
    errors([REFUSED.identity, REFUSED.impostor, REFUSED.foreign, ...CLOSED]);
  });

  it('a TCP proxy to an ISTIO_MUTUAL cluster (L4 front → relay): mutual TLS with the cluster\'s own ALPN, bytes echoed', async () => {
    const r = await app().tcp(DB.vip, DB.port, [{ send: 'SELECT 1;\n', want: 10 }], 8000);
    expect(r.error).toBeUndefined();
    expect(r.received.map((b) => b.toString())).toEqual(['SELECT 1;\n']);
    expect((await pod.cluster.served('db')).requests.at(-1)).toMatchObject({
      clientSan: `URI:${POD_SPIFFE_ID}`,
      clientKey: KEY_SEEN[keyType],
      servername: `outbound_.${DB.port}_._.${fqdn('db', NS)}`,
      alpnOffered: ['istio-peer-exchange', 'istio'],
    });
    errors([REFUSED.identity, REFUSED.impostor, REFUSED.foreign, ...CLOSED]);
  });
});
