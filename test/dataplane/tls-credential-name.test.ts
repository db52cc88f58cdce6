// DestinationRule SIMPLE / MUTUAL with credentialName on the real APISIX: istiod serves the
// Kubernetes secrets over SDS on the ADS stream (`kubernetes://<name>` → the client certificate and
// key, `kubernetes://<name>-cacert` → the CA; pilot/pkg/xds/sds.go), the agent subscribes to the
// names its clusters use and hands the material to the TLS relay (agent/mtls/sds-secrets.ts,
// tls_sds.lua). Checked: MUTUAL — the server requiring a client certificate sees the one from the
// secret; SIMPLE — the server's chain is verified against the secret's CA (a CA that did not issue it:
// refused); a secret istiod does not send — refused, with the note on the cluster and the reason in
// the error log; a rotated secret applies to the next connection; the CRLs of a CA secret (ca.crl)
// refuse a server whose certificate is revoked.
import { mkdtempSync, rmSync } from 'node:fs';
import type { Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeWhenAvailable } from '../support/requirements.js';
import { waitFor } from '../support/wait.js';
import { missingForPod, podManifest } from '../support/pod/requirements.js';
import { ISTIOD_IP, startPod, type RunningPod } from '../support/pod/pod-harness.js';
import { describeLines, RELAY_CLOSED_LINES } from '../support/pod/apisix-log.js';
import { send } from '../support/echo-requests.js';
import { createTestPki, crlPem, dnsLeaf, serialOf, type TestPki } from '../support/test-pki.js';
import { TEST_CA_TOKEN, unixBridge, withTestCa } from '../support/pod/mesh-ca.js';
import { FakeIstioCa } from '../support/fake-istio-ca.js';
import { defaultInjectionConfig } from '../../webhook/config/injection-config.js';
import {
  allowAnyVirtualHost, blackHoleCluster, edsCluster, httpRoute, MeshResources, outboundCluster, outboundHttpListener,
  passthroughCluster, routeConfiguration, sdsCaSecret, sdsCertificateSecret, serviceVirtualHost, virtualOutbound, withClientTls, type ClientTls,
} from '../support/istio-xds.js';

const NS = 'test';
const POD = 'client';

/** Each external service: VIP, endpoint, the DestinationRule's tls (credentialName), whether its server requires a client certificate. */
const services = {
  mutual: { vip: '10.96.41.1', ip: '10.244.41.1', tls: { mode: 'MUTUAL', credentialName: 'client-cred', sni: 'mutual.example.com', subjectAltNames: ['mutual.example.com'] }, requireClient: true },
  simple: { vip: '10.96.41.2', ip: '10.244.41.2', tls: { mode: 'SIMPLE', credentialName: 'api-ca', sni: 'simple.example.com', subjectAltNames: ['simple.example.com'] }, requireClient: false },
  missing: { vip: '10.96.41.3', ip: '10.244.41.3', tls: { mode: 'SIMPLE', credentialName: 'absent', sni: 'missing.example.com' }, requireClient: false },
  rotated: { vip: '10.96.41.4', ip: '10.244.41.4', tls: { mode: 'SIMPLE', credentialName: 'rotated-ca', sni: 'rotated.example.com', subjectAltNames: ['rotated.example.com'] }, requireClient: false },
  // the CA secrets of these two carry CRLs (the Kubernetes secret's ca.crl): one revokes the server's certificate
  revoked: { vip: '10.96.41.5', ip: '10.244.41.5', tls: { mode: 'SIMPLE', credentialName: 'revoked-ca', sni: 'revoked.example.com' }, requireClient: false },
  unrevoked: { vip: '10.96.41.6', ip: '10.244.41.6', tls: { mode: 'SIMPLE', credentialName: 'unrevoked-ca', sni: 'unrevoked.example.com' }, requireClient: false },
} as const;
type Service = keyof typeof services;
const host = (s: Service) => `${s}.example.com`;
const cluster = (s: Service) => outboundCluster(80, host(s));

function mesh(): MeshResources {
  const m = new MeshResources();
  for (const s of Object.keys(services) as Service[]) {
    m.cluster(withClientTls(edsCluster(cluster(s)), services[s].tls as ClientTls), [{ ip: services[s].ip, port: 443 }]);
  }
  m.route(routeConfiguration(80, [
    ...(Object.keys(services) as Service[]).map((s) => serviceVirtualHost(host(s), 80, services[s].vip, [httpRoute('default', { prefix: '/' }, { cluster: cluster(s) })])),
    allowAnyVirtualHost(),
  ]));
  m.cluster(passthroughCluster()).cluster(blackHoleCluster());
  m.listener(outboundHttpListener(80)).listener(virtualOutbound());
  return m;
}

const refused = (s: Service, reason: string) =>
  new RegExp(String.raw`\[error\] .*TLS relay 127\.\d+\.\d+\.\d+: outbound\|80\|\|${s}\.example\.com endpoint ${services[s].ip.replaceAll('.', '\\.')}:443 refused: ${reason}`);
const REFUSED = {
  missing: refused('missing', String.raw`the SDS secret kubernetes://absent-cacert \(DestinationRule credentialName\) has not come from istiod`),
  rotated: refused('rotated', String.raw`its certificate chain does not verify against the CA certificates of the SDS secret kubernetes://rotated-ca-cacert: unable to get local issuer certificate`),
  revoked: refused('revoked', String.raw`its certificate chain does not verify against the CA certificates of the SDS secret kubernetes://revoked-ca-cacert: certificate revoked`),
  mutualBefore: refused('mutual', String.raw`the SDS secret kubernetes://client-cred(-cacert)? \(DestinationRule credentialName\) has not come from istiod`),
  // any service before its secrets arrive (pushed by the tests one after the other)
  notYet: new RegExp(String.raw`\[error\] .*TLS relay 127\.\d+\.\d+\.\d+: outbound\|80\|\|\w+\.example\.com endpoint [\d.]+:443 refused: the SDS secret kubernetes://[\w-]+ \(DestinationRule credentialName\) has not come from istiod`),
};
const CLOSED = RELAY_CLOSED_LINES;

describeWhenAvailable('DestinationRule credentialName: TLS origination with istiod\'s SDS secrets (real APISIX)', missingForPod(), () => {
  let pod: RunningPod;
  let ca: FakeIstioCa;
  let bridge: Server;
  let dir: string;
  let external: TestPki;
  let foreign: TestPki;
  const leaves = new Map<Service, { cert: string; key: string }>();
  const errors = () => {
    const lines = pod.apisixErrors([...Object.values(REFUSED), ...CLOSED]);
    expect(lines, describeLines(lines)).toEqual([]);
  };
  const get = (s: Service, path = '/') => send(pod.app(), { url: `http://${services[s].vip}${path}` });
  /** The request until it is answered with `status` (the agent writes secrets as they come; APISIX's watch follows). */
  const until = async (s: Service, status: number) => {
    let res = await get(s);
    for (let i = 0; i < 150 && res.status !== status; i++) {
      await new Promise((r) => setTimeout(r, 200));
      res = await get(s);
    }
    return res;
  };
  const skipped = async (): Promise<Array<{ kind: string; name: string; reason: string; detail?: string }>> => {
    const res = await pod.app().http({ url: `http://127.0.0.1:${defaultInjectionConfig.ports.agentStatus}/debug/config` });
    if (!('status' in res) || res.status !== 200) throw new Error(`/debug/config: ${JSON.stringify(res).slice(0, 200)}`);
    return (JSON.parse(res.body) as { skipped: Array<{ kind: string; name: string; reason: string; detail?: string }> }).skipped;
  };

  beforeAll(async () => {
    const mesh_ = createTestPki();
    external = createTestPki('api-ca');
    foreign = createTestPki('foreign');
    ca = new FakeIstioCa(mesh_);
    ca.requiredToken = TEST_CA_TOKEN;
    ca.expectedSpiffeId = `spiffe://cluster.local/ns/${NS}/sa/${POD}`;
    dir = mkdtempSync(join(tmpdir(), 'tls-credential-name-'));
    bridge = await unixBridge(join(dir, 'ca.sock'), await ca.start());
    pod = await startPod({
      manifest: podManifest(POD, NS, { app: POD }),
      xds: mesh().resources,
      clusterAddresses: Object.values(services).flatMap((s) => [s.vip, s.ip]),
      mutateInjected: withTestCa(mesh_.root.pem),
    });
    for (const s of Object.keys(services) as Service[]) leaves.set(s, dnsLeaf(external.intermediate, [host(s)]));
    await Promise.all((Object.keys(services) as Service[]).map((s) =>
      pod.cluster.serveTls(s, services[s].ip, 443, {
        ...leaves.get(s)!,
        ...(services[s].requireClient ? { ca: external.root.pem } : {}),
      })));
    await pod.cluster.relay(ISTIOD_IP, 15012, join(dir, 'ca.sock'));
    expect(await pod.waitSynced(20_000)).toBe(true);
    await pod.kubelet.waitReady(30_000);
  }, 90_000);
  afterAll(async () => {
    await pod?.stop();
    await ca?.stop();
    bridge?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('before istiod sends the secrets: refused (502, no request reaches the server), the note on the cluster names the missing secret', async () => {
    expect((await get('mutual')).status).toBe(502);
    expect((await pod.cluster.served('mutual')).count).toBe(0);
    expect(pod.apisixLog()).toMatch(REFUSED.mutualBefore);
    const notes = await skipped();
    expect(notes).toContainEqual(expect.objectContaining({ kind: 'cluster', name: cluster('mutual'), reason: 'tls-origination-refused', detail: expect.stringContaining('kubernetes://client-cred') }));
    errors();
  }, 60_000);

  it('MUTUAL with credentialName: the server requiring a client certificate sees the one of the secret; 200, and the note is gone', async () => {
    const client = dnsLeaf(external.intermediate, ['client.example.com'], 'clientAuth');
    pod.istiod.set('secret', sdsCertificateSecret('kubernetes://client-cred', client.cert, client.key));
    pod.istiod.set('secret', sdsCaSecret('kubernetes://client-cred-cacert', external.root.pem));
    pod.istiod.push(['secret']);
    const res = await until('mutual', 200);
    expect(res.status).toBe(200);
    expect(res.echo).toMatchObject({ name: 'mutual', servername: 'mutual.example.com', clientSan: 'DNS:client.example.com' });
    const more = await Promise.all(Array.from({ length: 4 }, () => get('mutual')));
    expect(more.map((r) => r.status)).toEqual([200, 200, 200, 200]);
    // the secrets reach the store at once, the notes with the next (coalesced) apply
    await waitFor(async () => (await skipped()).every((n) => n.name !== cluster('mutual')), 5_000, 'the cluster\'s refusal note gone');
    errors();
  }, 60_000);

  it('SIMPLE with credentialName: the server\'s chain verified against the secret\'s CA; 200, no client certificate sent', async () => {
    pod.istiod.set('secret', sdsCaSecret('kubernetes://api-ca-cacert', external.root.pem));
    pod.istiod.push(['secret']);
    const res = await until('simple', 200);
    expect(res.status).toBe(200);
    expect(res.echo).toMatchObject({ name: 'simple', servername: 'simple.example.com' });
    expect(res.echo?.['clientSan']).toBeUndefined();
    errors();
  }, 60_000);

  it('a secret istiod never sends (absent, or not the proxy\'s to read): 502 before connecting, the reason in the error log and the note', async () => {
    expect((await get('missing')).status).toBe(502);
    expect((await pod.cluster.served('missing')).connections).toBe(0);
    expect(pod.apisixLog()).toMatch(REFUSED.missing);
    expect(await skipped()).toContainEqual(expect.objectContaining({ kind: 'cluster', name: cluster('missing'), reason: 'tls-origination-refused', detail: expect.stringContaining('kubernetes://absent-cacert') }));
    // /debug/xds: what istiod has sent and what it has not
    const res = await pod.app().http({ url: `http://127.0.0.1:${defaultInjectionConfig.ports.agentStatus}/debug/xds` });
    const sds = ('status' in res ? JSON.parse(res.body) : {}).sds as { version: string; held: string[]; pending: string[] };
    expect(sds.pending).toContain('kubernetes://absent-cacert');
    expect(sds.held).toEqual(expect.arrayContaining(['kubernetes://client-cred', 'kubernetes://client-cred-cacert', 'kubernetes://api-ca-cacert']));
    expect(sds.version).not.toBe('');
    errors();
  }, 60_000);

  it('rotation: a CA secret that did not issue the server\'s certificate is refused; its next version (the right CA) applies to the next connection', async () => {
    pod.istiod.set('secret', sdsCaSecret('kubernetes://rotated-ca-cacert', foreign.root.pem));
    pod.istiod.push(['secret']);
    // refused for the foreign CA once it arrived (before: refused for its absence)
    for (let i = 0; i < 150 && !REFUSED.rotated.test(pod.apisixLog()); i++) {
      await get('rotated');
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(pod.apisixLog()).toMatch(REFUSED.rotated);
    expect((await pod.cluster.served('rotated')).count).toBe(0);
    pod.istiod.set('secret', sdsCaSecret('kubernetes://rotated-ca-cacert', external.root.pem));
    pod.istiod.push(['secret']);
    const res = await until('rotated', 200);
    expect(res.status).toBe(200);
    expect(res.echo).toMatchObject({ name: 'rotated', servername: 'rotated.example.com' });
    errors();
  }, 60_000);

  it('a CA secret with CRLs (ca.crl): a server whose certificate is revoked is refused, one that is not gets the request', async () => {
    // every CA of the chain needs a current CRL from its issuer (Envoy: CRL_CHECK_ALL): the root's for the intermediate
    const rootCrl = crlPem(external.root);
    pod.istiod.set('secret', sdsCaSecret('kubernetes://revoked-ca-cacert', external.root.pem, crlPem(external.intermediate, [serialOf(leaves.get('revoked')!.cert)]) + rootCrl));
    pod.istiod.set('secret', sdsCaSecret('kubernetes://unrevoked-ca-cacert', external.root.pem, crlPem(external.intermediate, [serialOf(leaves.get('mutual')!.cert)]) + rootCrl));
    pod.istiod.push(['secret']);
    const res = await until('unrevoked', 200);
    expect(res.status).toBe(200);
    expect(res.echo).toMatchObject({ name: 'unrevoked', servername: 'unrevoked.example.com' });
    for (let i = 0; i < 150 && !REFUSED.revoked.test(pod.apisixLog()); i++) {
      expect((await get('revoked')).status).toBe(502);
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(pod.apisixLog()).toMatch(REFUSED.revoked);
    expect((await pod.cluster.served('revoked')).count).toBe(0);
    expect((await pod.cluster.served('revoked')).connections).toBeGreaterThan(0);
    errors();
  }, 60_000);
});
