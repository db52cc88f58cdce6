import { generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import forge from 'node-forge';

/**
 * A mesh PKI shaped like Istio's with a plugged-in CA: root → intermediate (istiod's signing CA) →
 * leaves; istiod's own serving certificate (DNS SAN istiod.istio-system.svc) comes from the
 * intermediate too. Keys come from node:crypto (forge's pure-JS RSA key generation takes seconds).
 */
export interface CaKeyPair {
  cert: forge.pki.Certificate;
  key: forge.pki.rsa.PrivateKey;
  pem: string;
}

export interface TestPki {
  root: CaKeyPair;
  intermediate: CaKeyPair;
  /** istiod's serving certificate and key (PEM; the chain includes the intermediate) */
  istiodCertChainPem: string;
  istiodKeyPem: string;
}

export function rsaKey(): forge.pki.rsa.PrivateKey {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return forge.pki.privateKeyFromPem(privateKey.export({ type: 'pkcs8', format: 'pem' }) as string) as forge.pki.rsa.PrivateKey;
}

export function serial(): string {
  return `01${randomBytes(15).toString('hex')}`; // positive, 16 bytes
}

function caCertificate(name: string, key: forge.pki.rsa.PrivateKey, issuer?: CaKeyPair): CaKeyPair {
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.setRsaPublicKey(key.n, key.e);
  cert.serialNumber = serial();
  cert.validity.notBefore = new Date(Date.now() - 3600_000);
  cert.validity.notAfter = new Date(Date.now() + 10 * 365 * 86400_000);
  const subject = [{ name: 'organizationName', value: name }];
  cert.setSubject(subject);
  cert.setIssuer(issuer ? issuer.cert.subject.attributes : subject);
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  cert.sign(issuer ? issuer.key : key, forge.md.sha256.create());
  return { cert, key, pem: forge.pki.certificateToPem(cert) };
}

/** A self-signed root (another mesh, for "foreign CA" tests, is just another call). */
export function createTestPki(trustDomain = 'cluster.local'): TestPki {
  const root = caCertificate(`${trustDomain} root`, rsaKey());
  const intermediate = caCertificate(`${trustDomain} istiod`, rsaKey(), root);
  const istiodKey = rsaKey();
  const istiod = forge.pki.createCertificate();
  istiod.publicKey = forge.pki.setRsaPublicKey(istiodKey.n, istiodKey.e);
  istiod.serialNumber = serial();
  istiod.validity.notBefore = new Date(Date.now() - 3600_000);
  istiod.validity.notAfter = new Date(Date.now() + 365 * 86400_000);
  istiod.setSubject([]);
  istiod.setIssuer(intermediate.cert.subject.attributes);
  istiod.setExtensions([
    { name: 'subjectAltName', altNames: [{ type: 2, value: 'istiod.istio-system.svc' }], critical: true },
    { name: 'extKeyUsage', serverAuth: true, clientAuth: true },
  ]);
  istiod.sign(intermediate.key, forge.md.sha256.create());
  return {
    root,
    intermediate,
    istiodCertChainPem: forge.pki.certificateToPem(istiod) + intermediate.pem,
    istiodKeyPem: forge.pki.privateKeyToPem(istiodKey),
  };
}

/** A workload leaf as istiod issues it: one URI SAN, empty subject, NotBefore two minutes back. */
export function issueLeaf(issuer: CaKeyPair, publicKey: forge.pki.rsa.PublicKey, spiffeId: string, lifetimeSeconds: number, now = Date.now()): forge.pki.Certificate {
  const leaf = forge.pki.createCertificate();
  leaf.publicKey = publicKey;
  leaf.serialNumber = serial();
  leaf.validity.notBefore = new Date(now - 120_000);
  leaf.validity.notAfter = new Date(now + lifetimeSeconds * 1000);
  leaf.setSubject([]);
  leaf.setIssuer(issuer.cert.subject.attributes);
  leaf.setExtensions([
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true, clientAuth: true },
    { name: 'basicConstraints', cA: false, critical: true },
    { name: 'subjectAltName', altNames: [{ type: 6, value: spiffeId }], critical: true },
  ]);
  leaf.sign(issuer.key, forge.md.sha256.create());
  return leaf;
}

/**
 * `issueLeaf` for a key of any type node:crypto reads (the CA signs what the CSR carries: RSA or
 * EC P-256). forge writes certificates for RSA keys only, so for another key the TBSCertificate is
 * built by forge for the issuer's own public key as a stand-in, its SubjectPublicKeyInfo (field 7,
 * RFC 5280 §4.1) replaced by the real key's, and signed with the issuer's key as forge would.
 */
export function issueLeafPem(issuer: CaKeyPair, publicKey: KeyObject, spiffeId: string, lifetimeSeconds: number, now = Date.now()): { pem: string; notAfter: Date } {
  const spkiPem = publicKey.export({ type: 'spki', format: 'pem' }) as string;
  if (publicKey.asymmetricKeyType === 'rsa') {
    const leaf = issueLeaf(issuer, forge.pki.publicKeyFromPem(spkiPem), spiffeId, lifetimeSeconds, now);
    return { pem: forge.pki.certificateToPem(leaf), notAfter: leaf.validity.notAfter };
  }
  const { asn1 } = forge;
  const leaf = issueLeaf(issuer, forge.pki.setRsaPublicKey(issuer.key.n, issuer.key.e), spiffeId, lifetimeSeconds, now);
  const tbs = (forge.pki as unknown as { getTBSCertificate(c: forge.pki.Certificate): forge.asn1.Asn1 }).getTBSCertificate(leaf);
  (tbs.value as forge.asn1.Asn1[])[6] = asn1.fromDer(forge.util.decode64(spkiPem.replace(/-----[A-Z ]+-----|\s/g, '')));
  const md = forge.md.sha256.create();
  md.update(asn1.toDer(tbs).getBytes());
  const seq = (items: forge.asn1.Asn1[]) => asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, items);
  const cert = seq([
    tbs,
    seq([asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OID, false, asn1.oidToDer(forge.pki.oids['sha256WithRSAEncryption']!).getBytes()), asn1.create(asn1.Class.UNIVERSAL, asn1.Type.NULL, false, '')]),
    asn1.create(asn1.Class.UNIVERSAL, asn1.Type.BITSTRING, false, String.fromCharCode(0) + issuer.key.sign(md)),
  ]);
  return { pem: forge.pem.encode({ type: 'CERTIFICATE', body: asn1.toDer(cert).getBytes() }), notAfter: leaf.validity.notAfter };
}

/** A leaf with DNS SANs for a TLS server (or client), issued by `issuer`: its chain (leaf + issuer) and key, PEM. */
export function dnsLeaf(issuer: CaKeyPair, dnsNames: string[], usage: 'serverAuth' | 'clientAuth' = 'serverAuth'): { cert: string; key: string } {
  const key = rsaKey();
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.setRsaPublicKey(key.n, key.e);
  cert.serialNumber = serial();
  cert.validity.notBefore = new Date(Date.now() - 3600_000);
  cert.validity.notAfter = new Date(Date.now() + 86400_000);
  cert.setSubject([{ name: 'commonName', value: dnsNames[0]! }]);
  cert.setIssuer(issuer.cert.subject.attributes);
  cert.setExtensions([
    { name: 'extKeyUsage', [usage]: true },
    { name: 'subjectAltName', altNames: dnsNames.map((value) => ({ type: 2, value })) },
  ]);
  cert.sign(issuer.key, forge.md.sha256.create());
  return { cert: forge.pki.certificateToPem(cert) + issuer.pem, key: forge.pki.privateKeyToPem(key) };
}

/**
 * A CRL (X.509 v2, PEM) issued by `issuer` revoking these serials (hex), current for a day. forge
 * cannot write CRLs: the TBSCertList is built with its ASN.1 writer and signed with the issuer's key.
 */
export function crlPem(issuer: CaKeyPair, revokedSerials: string[] = []): string {
  const { asn1 } = forge;
  const seq = (items: forge.asn1.Asn1[]) => asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, items);
  const sha256WithRsa = () => seq([
    asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OID, false, asn1.oidToDer(forge.pki.oids['sha256WithRSAEncryption']!).getBytes()),
    asn1.create(asn1.Class.UNIVERSAL, asn1.Type.NULL, false, ''),
  ]);
  const time = (d: Date) => asn1.create(asn1.Class.UNIVERSAL, asn1.Type.UTCTIME, false, asn1.dateToUtcTime(d));
  const now = Date.now();
  const tbsItems: forge.asn1.Asn1[] = [
    asn1.create(asn1.Class.UNIVERSAL, asn1.Type.INTEGER, false, String.fromCharCode(1)), // v2
    sha256WithRsa(),
    forge.pki.distinguishedNameToAsn1(issuer.cert.subject),
    time(new Date(now - 3600_000)),
    time(new Date(now + 86400_000)),
  ];
  if (revokedSerials.length) {
    tbsItems.push(seq(revokedSerials.map((serialHex) => seq([
      asn1.create(asn1.Class.UNIVERSAL, asn1.Type.INTEGER, false, forge.util.hexToBytes(serialHex)),
      time(new Date(now - 60_000)),
    ]))));
  }
  const tbs = seq(tbsItems);
  const md = forge.md.sha256.create();
  md.update(asn1.toDer(tbs).getBytes());
  const signature = issuer.key.sign(md);
  const crl = seq([tbs, sha256WithRsa(), asn1.create(asn1.Class.UNIVERSAL, asn1.Type.BITSTRING, false, String.fromCharCode(0) + signature)]);
  const b64 = forge.util.encode64(asn1.toDer(crl).getBytes(), 64);
  return `-----BEGIN X509 CRL-----\n${b64}\n-----END X509 CRL-----\n`;
}

/** The serial number (hex) of a PEM certificate (the first of a chain). */
export function serialOf(pem: string): string {
  return forge.pki.certificateFromPem(pem).serialNumber;
}
