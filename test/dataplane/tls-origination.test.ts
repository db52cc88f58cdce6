// DestinationRule SIMPLE (TLS origination to an external HTTPS service; MUTUAL with files) on the real APISIX: the
// app sends plain HTTP to a ServiceEntry-like service on port 80; istiod's cluster originates TLS to
// the endpoints on 443 (agent/mtls/simple-tls.ts, the relay in tls_origin.lua, the CA in
// tls_roots.lua). Checked: the server gets the request over TLS with the DestinationRule's SNI, or
// the service's host when the rule names none (Envoy's auto_sni); a server whose chain does not
// verify against the given CA file or the system bundle, or whose SAN is not the expected one, gets
// no request and APISIX answers 502 with the relay's reason in its error log. A TCP proxy to a
// SIMPLE cluster passes the client's half-close to the TLS server (close_notify, then FIN). A caCrl
// file refuses a server whose certificate it revokes.
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingForPod, podManifest } from '../support/pod/requirements.js';
import { ISTIOD_IP, startPod, type RunningPod } from '../support/pod/pod-harness.js';
import { describeLines, RELAY_CLOSED_LINES } from '../support/pod/apisix-log.js';
import { send } from '../support/echo-requests.js';
import { createTestPki, crlPem, dnsLeaf, serialOf } from '../support/test-pki.js';
import { TEST_CA_TOKEN, unixBridge, withTestCa } from '../support/pod/mesh-ca.js';
import { FakeIstioCa } from '../support/fake-istio-ca.js';
import {
  allowAnyVirtualHost, blackHoleCluster, edsCluster, httpRoute, MeshResources, outboundCluster, outboundHttpListener, outboundTcpListener,
  passthroughCluster, routeConfiguration, serviceVirtualHost, virtualOutbound, withClientTls, type ClientTls,
} from '../support/istio-xds.js';

const NS = 'test';
const POD = 'client';


const caDir = mkdtempSync(join(tmpdir(), 'tls-origination-ca-'));
const CA_FILE = join(caDir, 'api-ca.pem');
const MISSING_CA_FILE = join(caDir, 'absent.pem');
// DestinationRule MUTUAL: the client certificate and key, files in the APISIX container
const CLIENT_CERT_FILE = join(caDir, 'client-cert.pem');
const CLIENT_KEY_FILE = join(caDir, 'client-key.pem');
// DestinationRule caCrl: CRL files in the APISIX container (the intermediate's, and the root's for the intermediate)
const CRL_REVOKING_FILE = join(caDir, 'revoking.crl');
const CRL_OTHER_FILE = join(caDir, 'other.crl');

/** Each external service: VIP, endpoint, the DestinationRule's tls, the names in the server's certificate, which CA issued it. */
const services = {
  api: { vip: '10.96.40.1', ip: '10.244.40.1', tls: { sni: 'api.example.com', subjectAltNames: ['api.example.com'], caCertificates: CA_FILE }, names: ['api.example.com'], ca: 'ours' },
  auto: { vip: '10.96.40.2', ip: '10.244.40.2', tls: { caCertificates: CA_FILE }, names: ['auto.example.com'], ca: 'ours' },
  wrongca: { vip: '10.96.40.3', ip: '10.244.40.3', tls: { sni: 'wrongca.example.com', subjectAltNames: ['wrongca.example.com'], caCertificates: CA_FILE }, names: ['wrongca.example.com'], ca: 'foreign' },
  wrongsan: { vip: '10.96.40.4', ip: '10.244.40.4', tls: { sni: 'wrongsan.example.com', subjectAltNames: ['wrongsan.example.com'], caCertificates: CA_FILE }, names: ['other.example.com'], ca: 'ours' },
  autowrong: { vip: '10.96.40.5', ip: '10.244.40.5', tls: { caCertificates: CA_FILE }, names: ['other.example.com'], ca: 'ours' },
  system: { vip: '10.96.40.6', ip: '10.244.40.6', tls: { sni: 'system.example.com' }, names: ['system.example.com'], ca: 'ours' },
  nofile: { vip: '10.96.40.7', ip: '10.244.40.7', tls: { sni: 'nofile.example.com', caCertificates: MISSING_CA_FILE }, names: ['nofile.example.com'], ca: 'ours' },
  mutual: { vip: '10.96.40.8', ip: '10.244.40.8', tls: { mode: 'MUTUAL', sni: 'mutual.example.com', caCertificates: CA_FILE, clientCertificate: CLIENT_CERT_FILE, privateKey: CLIENT_KEY_FILE }, names: ['mutual.example.com'], ca: 'ours' },
  // caCrl: a CRL revoking this server's certificate; another that revokes only another one
  revoked: { vip: '10.96.40.10', ip: '10.244.40.10', tls: { sni: 'revoked.example.com', subjectAltNames: ['revoked.example.com'], caCertificates: CA_FILE, caCrl: CRL_REVOKING_FILE }, names: ['revoked.example.com'], ca: 'ours' },
  crlok: { vip: '10.96.40.11', ip: '10.244.40.11', tls: { sni: 'crlok.example.com', subjectAltNames: ['crlok.example.com'], caCertificates: CA_FILE, caCrl: CRL_OTHER_FILE }, names: ['crlok.example.com'], ca: 'ours' },
} as const;
type Service = keyof typeof services;
/** A TCP service (the L4 front's TCP proxy) whose cluster originates SIMPLE TLS; its server answers only after the client's half-close. */
const TCP = { vip: '10.96.40.9', ip: '10.244.40.9', port: 7000, host: 'tcp.example.com' };
const TCP_CLUSTER = outboundCluster(TCP.port, TCP.host);
const host = (s: Service) => `${s}.example.com`;
const cluster = (s: Service) => outboundCluster(80, host(s));

function mesh(): MeshResources {
  const m = new MeshResources();
  for (const s of Object.keys(services) as Service[]) {
    m.cluster(withClientTls(edsCluster(cluster(s)), { mode: 'SIMPLE', ...(services[s].tls as Partial<ClientTls>) }), [{ ip: services[s].ip, port: 443 }]);
  }
  m.route(routeConfiguration(80, [
    ...(Object.keys(services) as Service[]).map((s) => serviceVirtualHost(host(s), 80, services[s].vip, [httpRoute('default', { prefix: '/' }, { cluster: cluster(s) })])),
    allowAnyVirtualHost(),
  ]));
  m.cluster(withClientTls(edsCluster(TCP_CLUSTER), { mode: 'SIMPLE', sni: TCP.host, subjectAltNames: [TCP.host], caCertificates: CA_FILE }), [{ ip: TCP.ip, port: TCP.port }]);
  m.listener(outboundTcpListener(TCP.vip, TCP.port, TCP_CLUSTER));
  m.cluster(passthroughCluster()).cluster(blackHoleCluster());
  m.listener(outboundHttpListener(80)).listener(virtualOutbound());
  return m;
}

const refused = (s: Service, reason: string) =>
  new RegExp(String.raw`\[error\] .*TLS relay 127\.\d+\.\d+\.\d+: outbound\|80\|\|${s}\.example\.com endpoint ${services[s].ip.replaceAll('.', '\\.')}:443 refused: ${reason}`);
const REFUSED = {
  wrongca: refused('wrongca', String.raw`its certificate chain does not verify against the CA certificates in ${CA_FILE}: unable to get local issuer certificate`),
  wrongsan: refused('wrongsan', String.raw`its certificate's SANs \(DNS:other\.example\.com\) match none of the cluster's`),
  autowrong: refused('autowrong', String.raw`its certificate's SANs \(DNS:other\.example\.com\) match none of the cluster's`),
  system: refused('system', String.raw`its certificate chain does not verify against the CA certificates in /etc/ssl/certs/ca-certificates\.crt: unable to get local issuer certificate`),
  nofile: refused('nofile', String.raw`cannot use the CA certificates in ${MISSING_CA_FILE}: .*No such file or directory`),
  revoked: refused('revoked', String.raw`its certificate chain does not verify against the CA certificates in ${CA_FILE}: certificate revoked`),
};
const CLOSED = RELAY_CLOSED_LINES;

describeWhenAvailable('DestinationRule SIMPLE: TLS origination from the APISIX sidecar (real APISIX)', missingForPod(), () => {
  let pod: RunningPod;
  let ca: FakeIstioCa;
  let bridge: Server;
  let dir: string;
  const errors = () => {
    const lines = pod.apisixErrors([...Object.values(REFUSED), ...CLOSED]);
    expect(lines, describeLines(lines)).toEqual([]);
  };
  const get = (s: Service, path = '/') => send(pod.app(), { url: `http://${services[s].vip}${path}` });

  beforeAll(async () => {
    const mesh_ = createTestPki();
    const external = createTestPki('api-ca');
    const foreign = createTestPki('foreign');
    // the DestinationRule's caCertificates: a file in the APISIX container (here: the host's filesystem)
    writeFileSync(CA_FILE, external.root.pem);
    const client = dnsLeaf(external.intermediate, ['client.example.com'], 'clientAuth');
    writeFileSync(CLIENT_CERT_FILE, client.cert);
    writeFileSync(CLIENT_KEY_FILE, client.key);
    chmodSync(caDir, 0o755);
    for (const f of [CA_FILE, CLIENT_CERT_FILE, CLIENT_KEY_FILE]) chmodSync(f, 0o644);
    ca = new FakeIstioCa(mesh_);
    ca.requiredToken = TEST_CA_TOKEN;
    ca.expectedSpiffeId = `spiffe://cluster.local/ns/${NS}/sa/${POD}`;
    dir = mkdtempSync(join(tmpdir(), 'tls-origination-'));
    bridge = await unixBridge(join(dir, 'ca.sock'), await ca.start());
    pod = await startPod({
      manifest: podManifest(POD, NS, { app: POD }),
      xds: mesh().resources,
      clusterAddresses: [...Object.values(services).flatMap((s) => [s.vip, s.ip]), TCP.vip, TCP.ip],
      mutateInjected: withTestCa(mesh_.root.pem),
    });
    const leaves = new Map((Object.keys(services) as Service[]).map((s) => [s, dnsLeaf(services[s].ca === 'ours' ? external.intermediate : foreign.intermediate, [...services[s].names])]));
    writeFileSync(CRL_REVOKING_FILE, crlPem(external.intermediate, [serialOf(leaves.get('revoked')!.cert)]) + crlPem(external.root));
    writeFileSync(CRL_OTHER_FILE, crlPem(external.intermediate, [serialOf(leaves.get('api')!.cert)]) + crlPem(external.root));
    for (const f of [CRL_REVOKING_FILE, CRL_OTHER_FILE]) chmodSync(f, 0o644);
    await Promise.all((Object.keys(services) as Service[]).map((s) =>
      pod.cluster.serveTls(s, services[s].ip, 443, {
        ...leaves.get(s)!,
        // the MUTUAL server requires a client certificate of the external CA
        ...(s === 'mutual' ? { ca: external.root.pem } : {}),
      })));
    await pod.cluster.serveTcp('tcp', TCP.ip, TCP.port, { tls: dnsLeaf(external.intermediate, [TCP.host]), countAtEnd: true });
    await pod.cluster.relay(ISTIOD_IP, 15012, join(dir, 'ca.sock'));
    expect(await pod.waitSynced(20_000)).toBe(true);
    await pod.kubelet.waitReady(30_000);
  }, 90_000);
  afterAll(async () => {
    await pod?.stop();
    await ca?.stop();
    bridge?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
    rmSync(caDir, { recursive: true, force: true });
  });

  it('SIMPLE with a CA file, sni and SANs: 200 over TLS, the server saw the DestinationRule\'s SNI and no client certificate', async () => {
    let res = await get('api', '/hello');
    for (let i = 0; i < 30 && res.status === 502; i++) {
      await new Promise((r) => setTimeout(r, 200));
      res = await get('api', '/hello');
    }
    expect(res.status).toBe(200);
    expect(res.echo).toMatchObject({ name: 'api', url: '/hello', servername: 'api.example.com' });
    const more = await Promise.all(Array.from({ length: 4 }, () => get('api')));
    expect(more.map((r) => r.status)).toEqual([200, 200, 200, 200]);
    errors();
  }, 30_000);

  it('MUTUAL with files: the server requiring a client certificate gets the one from the files; 200', async () => {
    const res = await get('mutual', '/m');
    expect(res.status).toBe(200);
    expect(res.echo).toMatchObject({ name: 'mutual', servername: 'mutual.example.com', clientSan: 'DNS:client.example.com' });
    errors();
  });

  it('SIMPLE without sni or SANs: the service\'s host as SNI (Envoy\'s auto_sni) and checked as the SAN; a certificate for another name: 502', async () => {
    const res = await get('auto', '/x');
    expect(res.status).toBe(200);
    expect(res.echo).toMatchObject({ name: 'auto', servername: 'auto.example.com' });
    expect((await get('autowrong')).status).toBe(502);
    expect((await pod.cluster.served('autowrong')).count).toBe(0);
    expect((await pod.cluster.served('autowrong')).connections).toBeGreaterThan(0);
    expect(pod.apisixLog()).toMatch(REFUSED.autowrong);
    errors();
  });

  it('a chain of another CA, or another SAN than the DestinationRule\'s: 502, the server gets no request, the reason in the error log', async () => {
    expect((await get('wrongca')).status).toBe(502);
    expect((await get('wrongsan')).status).toBe(502);
    for (const s of ['wrongca', 'wrongsan'] as const) {
      const served = await pod.cluster.served(s);
      expect(served.count).toBe(0);
      expect(served.connections).toBeGreaterThan(0); // refused after the handshake, before any data
      expect(pod.apisixLog()).toMatch(REFUSED[s]);
    }
    errors();
  });

  it('no caCertificates: the system bundle, which does not hold a private CA (502); an absent CA file: 502 before connecting', async () => {
    expect((await get('system')).status).toBe(502);
    expect((await get('nofile')).status).toBe(502);
    expect((await pod.cluster.served('system')).count).toBe(0);
    expect((await pod.cluster.served('nofile')).connections).toBe(0);
    expect(pod.apisixLog()).toMatch(REFUSED.system);
    expect(pod.apisixLog()).toMatch(REFUSED.nofile);
    errors();
  });

  it('caCrl: a server whose certificate the CRL file revokes gets no request (502, the reason in the error log); with a CRL revoking another certificate: 200', async () => {
    const ok = await get('crlok', '/c');
    expect(ok.status).toBe(200);
    expect(ok.echo).toMatchObject({ name: 'crlok', servername: 'crlok.example.com' });
    expect((await get('revoked')).status).toBe(502);
    const served = await pod.cluster.served('revoked');
    expect(served.count).toBe(0);
    expect(served.connections).toBeGreaterThan(0);
    expect(pod.apisixLog()).toMatch(REFUSED.revoked);
    errors();
  });

  it('a TCP proxy to a SIMPLE cluster: the client\'s half-close reaches the TLS server (close_notify, FIN), whose answer still comes back', async () => {
    const r = await pod.app().tcp(TCP.vip, TCP.port, [{ send: 'hello, relay', end: true, want: '12 bytes'.length }], 8000);
    expect(r.error).toBeUndefined();
    expect(r.received.map((b) => b.toString())).toEqual(['12 bytes']);
    expect((await pod.cluster.served('tcp')).requests.at(-1)).toMatchObject({ servername: TCP.host });
    errors();
  });
});
