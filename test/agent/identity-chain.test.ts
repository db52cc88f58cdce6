// The checks on what the CA answers (agent/identity/issued-chain.ts), the SPIFFE id and the renewal
// time: pure functions, fed with certificates from a real root → intermediate → leaf PKI.
import { createPrivateKey, createPublicKey, X509Certificate } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import forge from 'node-forge';
import { beforeAll, describe, expect, it } from 'vitest';
import { checkIssuedChain, IssuedChainError } from '../../agent/identity/issued-chain.js';
import { renewalDelayMs } from '../../agent/identity/renewal-time.js';
import { SpiffeIdError, workloadSpiffeId } from '../../agent/identity/spiffe-id.js';
import { generateKeyAndCsr } from '../../agent/identity/key-and-csr.js';
import { createTestPki, issueLeaf, issueLeafPem, rsaKey, type TestPki } from '../support/test-pki.js';
import { readCsr } from '../support/fake-istio-ca.js';

const ID = 'spiffe://cluster.local/ns/bookinfo/sa/reviews';
let pki: TestPki;
let other: TestPki;
let key: forge.pki.rsa.PrivateKey;
const pem = (c: forge.pki.Certificate) => forge.pki.certificateToPem(c);
const publicOf = (k: forge.pki.rsa.PrivateKey) => forge.pki.setRsaPublicKey(k.n, k.e);
const nodeKey = (k: forge.pki.rsa.PrivateKey) => createPrivateKey(forge.pki.privateKeyToPem(k));

beforeAll(() => {
  pki = createTestPki();
  other = createTestPki();
  key = rsaKey();
});

describe('checkIssuedChain', () => {
  it('splits istiod\'s answer into the chain to present (leaf + intermediate) and the root', () => {
    const leaf = issueLeaf(pki.intermediate, publicOf(key), ID, 60);
    const issued = checkIssuedChain([pem(leaf), pki.intermediate.pem, pki.root.pem], { spiffeId: ID, key: nodeKey(key) }, Date.now());
    const presented = issued.certChainPem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g)!;
    expect(presented).toHaveLength(2);
    expect(new X509Certificate(presented[0]!).subjectAltName).toBe(`URI:${ID}`);
    expect(new X509Certificate(presented[1]!).fingerprint256).toBe(new X509Certificate(pki.intermediate.pem).fingerprint256);
    expect(new X509Certificate(issued.rootPem).fingerprint256).toBe(new X509Certificate(pki.root.pem).fingerprint256);
    expect(issued.notAfter.getTime()).toBe(Math.floor(leaf.validity.notAfter.getTime() / 1000) * 1000);
  });

  it('accepts the older answer shape (the chain concatenated in one element) and several roots at the end', () => {
    const leaf = issueLeaf(pki.intermediate, publicOf(key), ID, 60);
    const issued = checkIssuedChain([pem(leaf), pki.intermediate.pem + pki.root.pem + other.root.pem], { spiffeId: ID, key: nodeKey(key) }, Date.now());
    expect(issued.certChainPem.match(/BEGIN CERTIFICATE/g)).toHaveLength(2);
    expect(issued.rootPem.match(/BEGIN CERTIFICATE/g)).toHaveLength(2);
  });

  const refusals: Array<[string, () => string[], RegExp]> = [
    ['an empty chain', () => [], /empty certificate chain/],
    ['a leaf for another key', () => [pem(issueLeaf(pki.intermediate, publicOf(rsaKey()), ID, 60)), pki.intermediate.pem, pki.root.pem], /not for the key of the CSR/],
    ['a leaf for another identity', () => [pem(issueLeaf(pki.intermediate, publicOf(key), 'spiffe://cluster.local/ns/bookinfo/sa/admin', 60)), pki.intermediate.pem, pki.root.pem], /SAN is "URI:spiffe:\/\/cluster.local\/ns\/bookinfo\/sa\/admin"/],
    ['a leaf signed by another CA than the next certificate', () => [pem(issueLeaf(other.intermediate, publicOf(key), ID, 60)), pki.intermediate.pem, pki.root.pem], /certificate 0 of the chain is not signed/],
    ['an intermediate from another root', () => [pem(issueLeaf(pki.intermediate, publicOf(key), ID, 60)), pki.intermediate.pem, other.root.pem], /does not verify up to any of its root/],
    ['no root at the end', () => [pem(issueLeaf(pki.intermediate, publicOf(key), ID, 60)), pki.intermediate.pem], /does not end with a self-signed root/],
    ['an expired leaf', () => [pem(issueLeaf(pki.intermediate, publicOf(key), ID, -1)), pki.intermediate.pem, pki.root.pem], /expired/],
    ['an element without a certificate', () => ['hello', pki.root.pem], /element 0 of the chain holds no PEM certificate/],
    ['an unterminated PEM block', () => ['-----BEGIN CERTIFICATE-----\nAAAA', pki.root.pem], /unterminated PEM block/],
    ['a block that is not X.509', () => ['-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n', pki.root.pem], /certificate 0 of the chain is not a valid X.509/],
    ['too many elements', () => Array.from({ length: 17 }, () => pki.root.pem), /17 chain elements/],
    ['a huge element', () => [`${'x'.repeat(70_000)}`], /element 0 of the chain is 70000 characters long/],
  ];
  for (const [what, chain, message] of refusals) {
    it(`refuses ${what}`, () => {
      expect(() => checkIssuedChain(chain(), { spiffeId: ID, key: nodeKey(key) }, Date.now())).toThrow(IssuedChainError);
      expect(() => checkIssuedChain(chain(), { spiffeId: ID, key: nodeKey(key) }, Date.now())).toThrow(message);
    });
  }
});

describe('generateKeyAndCsr', () => {
  it('makes a fresh RSA 2048 key and a verifying CSR with exactly one critical URI SAN and an empty subject', async () => {
    const a = await generateKeyAndCsr(ID);
    const b = await generateKeyAndCsr(ID);
    expect(a.keyPem).not.toBe(b.keyPem);
    const csr = forge.pki.certificationRequestFromPem(a.csrPem);
    expect(csr.verify()).toBe(true);
    expect(csr.subject.attributes).toEqual([]);
    expect((csr.publicKey as forge.pki.rsa.PublicKey).n.bitLength()).toBe(2048);
    const ext = (csr.getAttribute({ name: 'extensionRequest' }) as unknown as { extensions: Array<{ name: string; critical?: boolean; altNames: Array<{ type: number; value: string }> }> }).extensions;
    expect(ext).toHaveLength(1);
    expect(ext[0]!.name).toBe('subjectAltName');
    expect(ext[0]!.critical).toBe(true);
    expect(ext[0]!.altNames).toEqual([{ type: 6, value: ID }]);
    expect(a.key.asymmetricKeyType).toBe('rsa');
  });
});

describe('generateKeyAndCsr, checked by OpenSSL', () => {
  const keys = { rsa: { type: 'rsa', openssl: /Public Key Algorithm: rsaEncryption[\s\S]*Public-Key: \(2048 bit\)/, signature: 'sha256WithRSAEncryption' },
    ecdsa: { type: 'ec', openssl: /Public Key Algorithm: id-ecPublicKey[\s\S]*Public-Key: \(256 bit\)[\s\S]*NIST CURVE: P-256/, signature: 'ecdsa-with-SHA256' } } as const;
  for (const [keyType, expected] of Object.entries(keys) as Array<[keyof typeof keys, (typeof keys)[keyof typeof keys]]>) {
    it(`${keyType}: the CSR verifies, has an empty subject and exactly one critical URI SAN, and a leaf for it matches the key`, async () => {
      const { key, keyPem, csrPem } = await generateKeyAndCsr(ID, keyType);
      expect(key.asymmetricKeyType).toBe(expected.type);
      const openssl = spawnSync('openssl', ['req', '-verify', '-noout', '-text'], { input: csrPem, encoding: 'utf8' });
      expect(openssl.status, openssl.stderr).toBe(0);
      expect(`${openssl.stdout}${openssl.stderr}`).toMatch(/verify OK/);
      expect(openssl.stdout).toMatch(/Subject: *\n/);
      expect(openssl.stdout).toMatch(expected.openssl);
      expect(openssl.stdout).toContain(`Signature Algorithm: ${expected.signature}`);
      const requested = /Requested Extensions:\n([\s\S]*?)\n\s*Signature Algorithm/.exec(openssl.stdout)![1]!;
      expect(requested.trim().split('\n').map((l) => l.trim())).toEqual(['X509v3 Subject Alternative Name: critical', `URI:${ID}`]);
      // node's crypto reads the same request: its key is the one returned, its signature verifies
      const csr = readCsr(csrPem);
      expect(csr.verified).toBe(true);
      expect(csr.sans).toEqual([`6:${ID}`]);
      expect(csr.publicKey.export({ type: 'spki', format: 'pem' })).toBe(createPublicKey(key).export({ type: 'spki', format: 'pem' }));
      // and the chain checks accept a leaf issued for it, with the PEM key APISIX receives
      const leaf = issueLeafPem(pki.intermediate, csr.publicKey, ID, 60);
      const issued = checkIssuedChain([leaf.pem, pki.intermediate.pem, pki.root.pem], { spiffeId: ID, key: createPrivateKey(keyPem) }, Date.now());
      expect(new X509Certificate(issued.certChainPem).publicKey.asymmetricKeyDetails).toMatchObject(keyType === 'ecdsa' ? { namedCurve: 'prime256v1' } : { modulusLength: 2048 });
    });
  }

  it('a tampered ECDSA CSR does not verify', async () => {
    const { csrPem } = await generateKeyAndCsr(ID, 'ecdsa');
    const der = Buffer.from(csrPem.replace(/-----[A-Z ]+-----|\s/g, ''), 'base64');
    der[der.indexOf(Buffer.from(ID)) + 10] ^= 1; // one bit of the SAN
    const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
    expect(readCsr(tampered).verified).toBe(false);
    const openssl = spawnSync('openssl', ['req', '-verify', '-noout'], { input: tampered, encoding: 'utf8' });
    expect(`${openssl.stdout}${openssl.stderr}`).toMatch(/verify fail/i);
  });
});

describe('workloadSpiffeId', () => {
  it('spells Istio\'s identity and refuses names that are not Kubernetes names', () => {
    expect(workloadSpiffeId('cluster.local', 'bookinfo', 'reviews')).toBe(ID);
    expect(() => workloadSpiffeId('Cluster.Local', 'bookinfo', 'reviews')).toThrow(SpiffeIdError);
    expect(() => workloadSpiffeId('cluster.local', 'book/info', 'reviews')).toThrow(/namespace "book\/info"/);
    expect(() => workloadSpiffeId('cluster.local', 'bookinfo', 'x'.repeat(300))).toThrow(/service account "x{64}"… \(300 characters\)/);
  });
});

describe('renewalDelayMs', () => {
  it('is half the lifetime from receipt, ±1 % of it, whatever NotBefore was', () => {
    const now = 1_000_000;
    expect(renewalDelayMs(now, now + 24 * 3600_000, () => 0.5)).toBe(12 * 3600_000);
    expect(renewalDelayMs(now, now + 24 * 3600_000, () => 0)).toBe(Math.round(24 * 3600_000 * 0.49));
    expect(renewalDelayMs(now, now + 24 * 3600_000, () => 1)).toBe(Math.round(24 * 3600_000 * 0.51));
  });

  it('never spins on a certificate that is (nearly) expired and stays within what a timer can hold', () => {
    expect(renewalDelayMs(1000, 1000, () => 0.5)).toBe(1000);
    expect(renewalDelayMs(1000, 0, () => 0.5)).toBe(1000);
    expect(renewalDelayMs(0, 90 * 86400_000, () => 0.5)).toBe(2 ** 31 - 1);
  });
});
