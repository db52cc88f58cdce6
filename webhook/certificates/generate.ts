import { isIP } from 'node:net';
import forge from 'node-forge';

/**
 * A certificate authority and serving certificates for the webhook, generated with node-forge.
 *
 * Pure functions from options to PEM strings (no files, no clock unless none is given): the
 * `webhook --self-signed` command writes the results to disk, the in-cluster certificate manager
 * keeps them in a Secret and puts the CA into the MutatingWebhookConfiguration's `caBundle`.
 */

/** A certificate and its private key, both PEM. */
export interface CertificateAndKey {
  certPem: string;
  keyPem: string;
}

/** The CA that signs serving certificates; `certPem` is what goes into a `caBundle`. */
export type CertificateAuthority = CertificateAndKey;

export interface CertificateValidity {
  /** How long the certificate is valid, counted from `now`. */
  days: number;
  /** The moment the validity is counted from; defaults to the current time. */
  now?: Date;
}

export interface CaOptions {
  /** Subject common name of the CA; defaults to `apisix-mesh-webhook-ca`. */
  commonName?: string;
  /** Defaults to ten years. */
  validity?: CertificateValidity;
  /** RSA modulus length; defaults to 2048. */
  keyBits?: number;
}

const DEFAULT_CA_DAYS = 3650;
const DEFAULT_KEY_BITS = 2048;
// Certificates start a little in the past so that a peer whose clock runs behind accepts them.
const CLOCK_SKEW_MS = 5 * 60 * 1000;

export function generateCa(opts: CaOptions = {}): CertificateAuthority {
  const commonName = opts.commonName ?? 'apisix-mesh-webhook-ca';
  const keys = generateKeyPair(opts.keyBits ?? DEFAULT_KEY_BITS);
  const cert = forge.pki.createCertificate();
  cert.publicKey = keys.publicKey;
  cert.serialNumber = randomSerial();
  setValidity(cert, opts.validity ?? { days: DEFAULT_CA_DAYS });
  const subject = [{ name: 'commonName', value: commonName }, { name: 'organizationName', value: 'apisix-mesh' }];
  cert.setSubject(subject);
  cert.setIssuer(subject);
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, pathLenConstraint: 0, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  cert.sign(keys.privateKey, forge.md.sha256.create());
  return { certPem: forge.pki.certificateToPem(cert), keyPem: forge.pki.privateKeyToPem(keys.privateKey) };
}

/**
 * A serving certificate for `dnsNames` (host names, or IP addresses, which become IP SANs), signed
 * by `ca`. The first name is also the subject's common name; clients (Go's among them) verify only
 * the subject alternative names.
 */
export function generateServingCert(
  ca: CertificateAuthority,
  dnsNames: readonly string[],
  validity: CertificateValidity,
  keyBits: number = DEFAULT_KEY_BITS,
): CertificateAndKey {
  if (dnsNames.length === 0) throw new Error('a serving certificate needs at least one DNS name or IP address');
  if (!(validity.days > 0)) throw new Error(`certificate validity must be a positive number of days, got ${validity.days}`);
  const caCert = forge.pki.certificateFromPem(ca.certPem);
  const caKey = forge.pki.privateKeyFromPem(ca.keyPem);
  const keys = generateKeyPair(keyBits);
  const cert = forge.pki.createCertificate();
  cert.publicKey = keys.publicKey;
  cert.serialNumber = randomSerial();
  setValidity(cert, validity);
  cert.setSubject([{ name: 'commonName', value: dnsNames[0]! }]);
  cert.setIssuer(caCert.subject.attributes);
  cert.setExtensions([
    { name: 'basicConstraints', cA: false, critical: true },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true },
    { name: 'subjectAltName', altNames: dnsNames.map(altName) },
    { name: 'subjectKeyIdentifier' },
    { name: 'authorityKeyIdentifier', keyIdentifier: caCert.generateSubjectKeyIdentifier().getBytes() },
  ]);
  cert.sign(caKey, forge.md.sha256.create());
  return { certPem: forge.pki.certificateToPem(cert), keyPem: forge.pki.privateKeyToPem(keys.privateKey) };
}

function altName(name: string): { type: number; value?: string; ip?: string } {
  // GeneralName types from RFC 5280: 2 = dNSName, 7 = iPAddress.
  return isIP(name) ? { type: 7, ip: name } : { type: 2, value: name };
}

function generateKeyPair(bits: number): forge.pki.rsa.KeyPair {
  // node-forge hands this to Node's native crypto when it is available, so it takes milliseconds.
  return forge.pki.rsa.generateKeyPair({ bits, e: 0x10001 });
}

function setValidity(cert: forge.pki.Certificate, validity: CertificateValidity): void {
  const now = validity.now ?? new Date();
  cert.validity.notBefore = new Date(now.getTime() - CLOCK_SKEW_MS);
  cert.validity.notAfter = new Date(now.getTime() + validity.days * 24 * 60 * 60 * 1000);
}

/** 16 random bytes with the top bit cleared: a positive serial, unique in practice (RFC 5280 §4.1.2.2). */
function randomSerial(): string {
  const bytes = forge.random.getBytesSync(16);
  const hex = forge.util.bytesToHex(bytes);
  return ((parseInt(hex.slice(0, 2), 16) & 0x7f) | 0x10).toString(16).padStart(2, '0') + hex.slice(2);
}
