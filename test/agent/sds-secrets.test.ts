// DestinationRule credentialName: the SDS secrets istiod serves over the ADS stream. The decoding
// and validation of one Secret (agent/mtls/sds-secret.ts: what Envoy would reject is NACKed, what the
// relay cannot use is marked unusable), the ADS client's subscription to the names its clusters use
// (against the fake istiod over a real gRPC stream), and what the agent hands to APISIX
// (agent/mtls/sds-secrets.ts: /apisix/mesh_sds objects, never key material in the log).
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Secret__Output as Secret } from '@grpc/grpc-js-xds/build/src/generated/envoy/extensions/transport_sockets/tls/v3/Secret.js';
import { decodeSecret } from '../../agent/mtls/sds-secret.js';
import { pendingSecretNotes, SDS_DIR, SdsSecrets, unusableSecretNotes, type ApisixSdsSecret } from '../../agent/mtls/sds-secrets.js';
import { secretResourceType } from '../../agent/xds/resource-types/secret.js';
import { AdsClient, type SecretChange } from '../../agent/xds/ads-client.js';
import { buildNode, nodeIdentityFromEnv } from '../../agent/xds/node.js';
import { encodeCanonical, fromCanonical } from '../../agent/xds/codec.js';
import { SECRET_TYPE_URL } from '../../agent/xds/protos.js';
import { KvStore } from '../../agent/store/store.js';
import { stableId } from '../../agent/translate/ids.js';
import { FakeIstiod } from '../support/fake-istiod.js';
import { waitFor } from '../support/wait.js';
import { createTestPki, crlPem, dnsLeaf, serialOf, type TestPki } from '../support/test-pki.js';
import { edsCluster, outboundCluster, sdsCaSecret, sdsCertificateSecret, withClientTls } from '../support/istio-xds.js';

let pki: TestPki;
let client: { cert: string; key: string };
let other: { cert: string; key: string };
beforeAll(() => {
  pki = createTestPki('api-ca');
  client = dnsLeaf(pki.intermediate, ['client.example.com'], 'clientAuth');
  other = dnsLeaf(pki.intermediate, ['other.example.com'], 'clientAuth');
});

const secret = (json: Record<string, unknown>) => fromCanonical<Secret>(SECRET_TYPE_URL, json);

describe('one SDS Secret (credentialName), as Envoy would take it', () => {
  it('a tls_certificate with the inline chain and key: the client certificate, its NotAfter', () => {
    const out = decodeSecret(secret(sdsCertificateSecret('kubernetes://client', client.cert, client.key)));
    expect(out.problem).toBeUndefined();
    expect(out.material).toMatchObject({ kind: 'certificate', key: client.key });
    if (out.material?.kind !== 'certificate') throw new Error('not a certificate');
    expect(out.material.certChain.match(/BEGIN CERTIFICATE/g)).toHaveLength(2);
    expect(out.material.notAfter).toBeGreaterThan(Date.now() / 1000);
  });

  it('a validation_context with the inline trusted_ca: the CA certificates; with the inline crl (ca.crl): and the CRLs', () => {
    const out = decodeSecret(secret(sdsCaSecret('kubernetes://client-cacert', pki.root.pem)));
    expect(out.material).toEqual({ kind: 'ca', trustedCa: `${pki.root.pem.trim()}\n` });
    const crls = crlPem(pki.intermediate, [serialOf(client.cert)]) + crlPem(pki.root);
    const withCrl = decodeSecret(secret(sdsCaSecret('kubernetes://client-cacert', pki.root.pem, crls)));
    expect(withCrl.material).toMatchObject({ kind: 'ca', crl: expect.stringContaining('BEGIN X509 CRL') });
    if (withCrl.material?.kind !== 'ca') throw new Error('not a CA');
    expect(withCrl.material.crl!.match(/BEGIN X509 CRL/g)).toHaveLength(2);
  });

  it('what Envoy rejects is a problem (NACK), and no message quotes the key', () => {
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [sdsCertificateSecret('kubernetes://c', client.cert, other.key), /the private key does not match the first certificate of the chain/],
      [sdsCertificateSecret('kubernetes://c', 'not a certificate', client.key), /the certificate chain holds no PEM certificate/],
      [sdsCertificateSecret('kubernetes://c', '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n', client.key), /certificate 1 does not parse/],
      [sdsCertificateSecret('kubernetes://c', client.cert, client.key.split(/\r?\n/).filter((_, i) => i !== 3).join('\n')), /the private key does not (parse|match)/],
      [sdsCertificateSecret('kubernetes://c', client.cert, 'key'), /the private key is not PEM/],
      [sdsCertificateSecret('kubernetes://c', client.cert.repeat(200), client.key), /larger than 262144 bytes|more than 16 certificates/],
      [{ name: 'kubernetes://c', tls_certificate: { private_key: { inline_string: client.key } } }, /without a certificate_chain/],
      [sdsCaSecret('kubernetes://c-cacert', 'garbage'), /trusted_ca holds no PEM certificate/],
      [{ name: 'kubernetes://c-cacert', validation_context: {} }, /validation_context without trusted_ca/],
      [sdsCaSecret('kubernetes://c-cacert', pki.root.pem, '-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n'), /CRL 1 is not a DER structure/],
      [sdsCaSecret('kubernetes://c-cacert', pki.root.pem, 'no crl'), /the CRL holds no PEM X509 CRL/],
    ];
    for (const [json, problem] of cases) {
      const out = decodeSecret(secret(json));
      expect(out.problem ?? `no problem: ${JSON.stringify(out.material).slice(0, 60)} for ${JSON.stringify(json).slice(0, 200)}`).toMatch(problem);
      expect(out.problem).not.toContain('PRIVATE KEY');
      expect(out.problem).not.toContain(client.key.split('\n')[1]!.slice(0, 20));
      // the resource type turns it into the NACK's error
      expect(secretResourceType.decode(encodeCanonical(SECRET_TYPE_URL, json)).error).toMatch(problem);
    }
  });

  it('what Envoy takes but the relay cannot enforce is unusable, with the reason (the relay refuses what needs it)', () => {
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [{ name: 'kubernetes://c', tls_certificate: { certificate_chain: { filename: '/etc/c.pem' }, private_key: { filename: '/etc/k.pem' } } }, /the certificate chain is a filename source/],
      [{ name: 'kubernetes://c', tls_certificate: { certificate_chain: { inline_string: client.cert }, private_key_provider: { provider_name: 'cryptomb' } } }, /private key provider/],
      [{ name: 'kubernetes://c', generic_secret: { secret: { inline_string: 'x' } } }, /holds generic_secret/],
      [{ name: 'kubernetes://c-cacert', validation_context: { trusted_ca: { inline_string: pki.root.pem }, match_subject_alt_names: [{ exact: 'x' }] } }, /sets match_subject_alt_names/],
    ];
    for (const [json, reason] of cases) {
      const out = decodeSecret(secret(json));
      expect(out.material, JSON.stringify(json).slice(0, 80)).toMatchObject({ kind: 'unusable', reason: expect.stringMatching(reason) });
      expect(secretResourceType.decode(encodeCanonical(SECRET_TYPE_URL, json)).error).toBeUndefined();
    }
  });
});

describe('the objects APISIX reads (/apisix/mesh_sds)', () => {
  it('one object per SDS name, rewritten on rotation, deleted when no cluster names it; the log names the secret, never its key', () => {
    const store = new KvStore();
    const logs: string[] = [];
    const sds = new SdsSecrets(store, { info: (m) => logs.push(m), warn: (m) => logs.push(m) });
    const read = () => new Map(store.range({ key: SDS_DIR, rangeEnd: '/apisix/mesh_sds0' }).kvs.map((kv) => [kv.key, Buffer.from(kv.value).toString()]));
    sds.ingest({ kind: 'secret', changed: new Map<string, unknown>([['kubernetes://client', secret(sdsCertificateSecret('kubernetes://client', client.cert, client.key))], ['kubernetes://client-cacert', secret(sdsCaSecret('kubernetes://client-cacert', pki.root.pem))]]), removed: [] });
    let objects = [...read().values()].filter((v) => v !== 'init_dir').map((v) => JSON.parse(v) as ApisixSdsSecret);
    expect(read().get(SDS_DIR)).toBe('init_dir');
    expect(objects.find((o) => o.name === 'kubernetes://client')).toMatchObject({ kind: 'certificate', key: client.key, cert_chain: expect.stringContaining('BEGIN CERTIFICATE') });
    expect(objects.find((o) => o.name === 'kubernetes://client-cacert')).toMatchObject({ kind: 'ca', trusted_ca: expect.stringContaining('BEGIN CERTIFICATE') });
    // rotation
    sds.ingest({ kind: 'secret', changed: new Map<string, unknown>([['kubernetes://client', secret(sdsCertificateSecret('kubernetes://client', other.cert, other.key))]]), removed: [] });
    objects = [...read().values()].filter((v) => v !== 'init_dir').map((v) => JSON.parse(v) as ApisixSdsSecret);
    expect(objects.find((o) => o.name === 'kubernetes://client')).toMatchObject({ key: other.key });
    sds.ingest({ kind: 'secret', changed: new Map(), removed: ['kubernetes://client'] });
    expect(sds.names()).toEqual(['kubernetes://client-cacert']);
    expect([...read().values()].some((v) => v.includes('kubernetes://client"'))).toBe(false);
    expect(logs.join('\n')).toMatch(/SDS secrets from istiod handed to APISIX at store revision \d+: kubernetes:\/\/client \(client certificate valid until/);
    for (const pem of [client.key, other.key]) expect(logs.join('\n')).not.toContain(pem.split('\n')[1]!);
  });

  it('a secret the relay cannot use is held with its reason (the relay refuses with it), and each cluster naming it gets the note', () => {
    const store = new KvStore();
    const sds = new SdsSecrets(store, { info: () => {}, warn: () => {} });
    const pinned = { name: 'kubernetes://api-cacert', validation_context: { trusted_ca: { inline_string: pki.root.pem }, verify_certificate_hash: ['aa'] } };
    sds.ingest({ kind: 'secret', changed: new Map<string, unknown>([['kubernetes://api-cacert', secret(pinned)]]), removed: [] });
    const object = JSON.parse(Buffer.from(store.get(`${SDS_DIR}${stableId('mesh_sds', 'kubernetes://api-cacert')}`)!.value).toString()) as ApisixSdsSecret;
    expect(object).toMatchObject({ name: 'kubernetes://api-cacert', kind: 'unusable', reason: expect.stringContaining('verify_certificate_hash') });
    expect(object.trusted_ca).toBeUndefined();
    expect(unusableSecretNotes(new Map([['kubernetes://api-cacert', ['outbound|443||api.example.com']]]), sds.unusable())).toEqual([
      expect.objectContaining({ kind: 'cluster', name: 'outbound|443||api.example.com', reason: 'tls-origination-refused', detail: expect.stringMatching(/kubernetes:\/\/api-cacert .*cannot be used: the secret's validation context sets verify_certificate_hash/) }),
    ]);
    // its next version without the pin is usable
    sds.ingest({ kind: 'secret', changed: new Map<string, unknown>([['kubernetes://api-cacert', secret(sdsCaSecret('kubernetes://api-cacert', pki.root.pem))]]), removed: [] });
    expect(sds.unusable().size).toBe(0);
  });
});

describe('the ADS client subscribes to the secrets its clusters name (SDS on the ADS stream)', () => {
  const env = { POD_NAME: 'client-abc', POD_NAMESPACE: 'test', INSTANCE_IP: '10.244.1.30', SERVICE_ACCOUNT: 'client' };
  const API = outboundCluster(443, 'api.example.com');
  let istiod: FakeIstiod | undefined;
  let ads: AdsClient | undefined;
  afterEach(async () => {
    ads?.stop();
    await istiod?.stop();
  });

  it('after CDS it asks for kubernetes://<name> and -cacert; a missing one is pending with its cluster; a bad version is NACKed and the good one kept; rotation; a cluster gone unsubscribes', async () => {
    istiod = new FakeIstiod({ cluster: [withClientTls(edsCluster(API), { mode: 'MUTUAL', credentialName: 'client', sni: 'api.example.com' })], endpoint: [{ cluster_name: API, endpoints: [] }], listener: [], route: [] });
    istiod.set('secret', sdsCertificateSecret('kubernetes://client', client.cert, client.key));
    const port = await istiod.start();
    ads = new AdsClient({ address: `127.0.0.1:${port}`, node: buildNode(nodeIdentityFromEnv(env), 'test'), backoff: { initialMs: 20, maxMs: 200 } });
    const changes: SecretChange[] = [];
    const nacks: string[] = [];
    ads.on('secrets', (c: SecretChange) => changes.push(c));
    ads.on('nack', (kind: string, detail: string) => nacks.push(`${kind}: ${detail}`));
    ads.start();
    await waitFor(() => changes.length === 1, 10_000, 'the first secret');
    const request = istiod.requests.find((r) => r.kind === 'secret')!;
    expect(request.names).toEqual(['kubernetes://client', 'kubernetes://client-cacert']);
    expect(changes[0]!.changed.has('kubernetes://client')).toBe(true);
    // istiod leaves out what it does not have (or may not serve to this proxy)
    expect(ads.pendingSecrets()).toEqual(new Map([['kubernetes://client-cacert', [API]]]));
    expect(pendingSecretNotes(ads.pendingSecrets())).toEqual([expect.objectContaining({ kind: 'cluster', name: API, reason: 'tls-origination-refused', detail: expect.stringContaining('kubernetes://client-cacert') })]);
    // the CA arrives
    istiod.set('secret', sdsCaSecret('kubernetes://client-cacert', pki.root.pem));
    istiod.push(['secret']);
    await waitFor(() => changes.length === 2, 10_000, 'the CA secret');
    expect(ads.pendingSecrets().size).toBe(0);
    // a key that does not match: NACKed by name, nothing handed on
    istiod.set('secret', sdsCertificateSecret('kubernetes://client', client.cert, other.key));
    istiod.push(['secret']);
    await waitFor(() => nacks.length === 1, 10_000, 'the NACK');
    expect(nacks[0]).toMatch(/^secret: secret "kubernetes:\/\/client": the private key does not match/);
    expect(changes.length).toBe(2);
    // the client's NACK reaches istiod after the client has reported it
    await waitFor(() => istiod!.requests.some((r) => r.kind === 'secret' && r.verdict === 'nack'), 10_000, 'the NACK at istiod');
    expect(istiod.requests.filter((r) => r.kind === 'secret' && r.verdict === 'nack')).toHaveLength(1);
    // rotation: a new valid version is handed on
    istiod.set('secret', sdsCertificateSecret('kubernetes://client', other.cert, other.key));
    istiod.push(['secret']);
    await waitFor(() => changes.length === 3, 10_000, 'the rotated secret');
    expect(changes[2]!.changed.has('kubernetes://client')).toBe(true);
    // the cluster without TLS: both names are dropped, the subscription emptied
    istiod.set('cluster', edsCluster(API));
    istiod.push(['cluster']);
    await waitFor(() => changes.length === 4, 10_000, 'the removal');
    expect(changes[3]!.removed.sort()).toEqual(['kubernetes://client', 'kubernetes://client-cacert']);
    // an empty subscription is istiod's "watch deleted"
    await waitFor(() => istiod!.requests.some((r) => r.kind === 'secret' && r.names.length === 0), 10_000, 'the empty subscription');
    expect(istiod.requests.filter((r) => r.kind === 'secret').at(-1)!.names).toEqual([]);
  });
});
