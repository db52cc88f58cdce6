// xDS over TLS as on istiod's 15012: the agent trusts only the given mesh root, sends the
// (re-read) service-account token as `authorization: Bearer` and the `ClusterID` header.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import forge from 'node-forge';
import { afterEach, describe, expect, it } from 'vitest';
import { AdsClient } from '../../agent/xds/ads-client.js';
import { xdsCredentials } from '../../agent/agent.js';
import { serverNameOptions } from '../../agent/istiod-credentials.js';
import { buildNode, nodeIdentityFromEnv } from '../../agent/xds/node.js';
import { FakeIstiod } from '../support/fake-istiod.js';
import { loadCanonical } from '../support/xds-fixtures.js';
import { waitFor } from '../support/wait.js';

function certificates() {
  const caKeys = forge.pki.rsa.generateKeyPair(2048);
  const ca = forge.pki.createCertificate();
  ca.publicKey = caKeys.publicKey;
  ca.serialNumber = '01';
  ca.validity.notBefore = new Date(Date.now() - 60_000);
  ca.validity.notAfter = new Date(Date.now() + 3600_000);
  ca.setSubject([{ name: 'organizationName', value: 'cluster.local' }]);
  ca.setIssuer(ca.subject.attributes);
  ca.setExtensions([{ name: 'basicConstraints', cA: true }, { name: 'keyUsage', keyCertSign: true, cRLSign: true }]);
  ca.sign(caKeys.privateKey, forge.md.sha256.create());
  const keys = forge.pki.rsa.generateKeyPair(2048);
  const cert = forge.pki.createCertificate();
  cert.publicKey = keys.publicKey;
  cert.serialNumber = '02';
  cert.validity.notBefore = ca.validity.notBefore;
  cert.validity.notAfter = ca.validity.notAfter;
  cert.setSubject([{ name: 'organizationName', value: 'istiod' }]);
  cert.setIssuer(ca.subject.attributes);
  cert.setExtensions([{ name: 'subjectAltName', altNames: [{ type: 2, value: 'istiod.istio-system.svc' }] }]);
  cert.sign(caKeys.privateKey, forge.md.sha256.create());
  return { root: forge.pki.certificateToPem(ca), cert: forge.pki.certificateToPem(cert), key: forge.pki.privateKeyToPem(keys.privateKey) };
}

const node = buildNode(nodeIdentityFromEnv({ POD_NAME: 'p', POD_NAMESPACE: 'default', INSTANCE_IP: '10.0.0.5' }), 'test');
let istiod: FakeIstiod | undefined;
let client: AdsClient | undefined;
afterEach(async () => {
  client?.stop();
  await istiod?.stop();
});

/** A TLS fake istiod on `listen` (token-1 required), and the root and token files a client reads. */
async function startTlsIstiod(listen: number | string): Promise<{ dir: string; port: number }> {
  const pem = certificates();
  const dir = mkdtempSync(join(tmpdir(), 'agent-tls-'));
  writeFileSync(join(dir, 'root-cert.pem'), pem.root);
  writeFileSync(join(dir, 'istio-token'), 'token-1\n');
  istiod = new FakeIstiod(loadCanonical('synthetic-reviews-xds-responses.json'));
  istiod.requiredToken = 'token-1';
  return { dir, port: await istiod.start(listen, { key: pem.key, cert: pem.cert }) };
}

describe('ADS over TLS with a service-account token', () => {
  it('verifies istiod against the mesh root and authenticates with the token and ClusterID', async () => {
    const { dir, port } = await startTlsIstiod(0);
    client = new AdsClient({
      address: `127.0.0.1:${port}`,
      node,
      credentials: xdsCredentials({ rootCertFile: join(dir, 'root-cert.pem'), tokenFile: join(dir, 'istio-token') }, 'Kubernetes'),
      channelOptions: { 'grpc.ssl_target_name_override': 'istiod.istio-system.svc', 'grpc.default_authority': 'istiod.istio-system.svc' },
      backoff: { initialMs: 20, maxMs: 100 },
    });
    client.start();
    await waitFor(() => client!.isComplete(), 15_000, 'a complete snapshot over TLS');
    expect(istiod!.streamMetadata[0]).toEqual({ authorization: 'Bearer token-1', clusterid: 'Kubernetes' });

    // the token rotates: the next stream carries the new one
    writeFileSync(join(dir, 'istio-token'), 'token-2\n');
    istiod!.requiredToken = 'token-2';
    istiod!.closeStreams();
    await waitFor(() => istiod!.streamMetadata.some((m) => m['authorization'] === 'Bearer token-2') && istiod!.streamCount > 0, 10_000, 'a stream with the new token');
  });

  // An IPv6-only cluster: istiod at its ClusterIP, `[fd00:…]:15012` (here ::1). istiod's certificate
  // names its Service, never an address: the server name carries the check (SNI, the certificate's
  // name, the :authority), the brackets only the dialling.
  it('dials istiod at an IPv6 literal over TLS, verifying the server name, and refuses it by the address alone', async () => {
    const { dir, port } = await startTlsIstiod('[::1]:0');
    const tls = { rootCertFile: join(dir, 'root-cert.pem'), tokenFile: join(dir, 'istio-token') };
    const dial = (serverName: string | undefined) =>
      new AdsClient({
        address: `[::1]:${port}`,
        node,
        credentials: xdsCredentials(tls, 'Kubernetes'),
        channelOptions: serverNameOptions(serverName),
        backoff: { initialMs: 20, maxMs: 100 },
      });
    // by the address: the certificate does not carry ::1, no stream ever opens
    client = dial(undefined);
    client.start();
    await waitFor(() => client!.stats.reconnects >= 2, 10_000, 'failed attempts');
    expect(istiod!.requests).toHaveLength(0);
    client.stop();
    client = dial('istiod.istio-system.svc');
    client.start();
    await waitFor(() => client!.isComplete(), 15_000, 'a complete snapshot over TLS to [::1]');
    expect(istiod!.streamMetadata[0]).toEqual({ authorization: 'Bearer token-1', clusterid: 'Kubernetes' });
  });

  it('refuses an istiod whose certificate does not chain to the mesh root', async () => {
    const trusted = certificates();
    const other = certificates();
    const dir = mkdtempSync(join(tmpdir(), 'agent-tls-'));
    writeFileSync(join(dir, 'root-cert.pem'), trusted.root);
    istiod = new FakeIstiod(loadCanonical('synthetic-reviews-xds-responses.json'));
    const port = await istiod.start(0, { key: other.key, cert: other.cert });
    client = new AdsClient({
      address: `127.0.0.1:${port}`,
      node,
      credentials: xdsCredentials({ rootCertFile: join(dir, 'root-cert.pem') }, 'Kubernetes'),
      channelOptions: { 'grpc.ssl_target_name_override': 'istiod.istio-system.svc' },
      backoff: { initialMs: 20, maxMs: 100 },
    });
    client.start();
    await waitFor(() => client!.stats.reconnects >= 2, 10_000, 'failed attempts');
    expect(istiod.requests).toHaveLength(0);
    expect(client.isComplete()).toBe(false);
  });
});
