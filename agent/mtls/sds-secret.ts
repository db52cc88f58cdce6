import { createPrivateKey, X509Certificate } from 'node:crypto';
import type { Secret__Output as Secret } from '@grpc/grpc-js-xds/build/src/generated/envoy/extensions/transport_sockets/tls/v3/Secret.js';
import type { DataSource__Output as DataSource } from '@grpc/grpc-js-xds/build/src/generated/envoy/config/core/v3/DataSource.js';

/**
 * A Secret istiod sends over SDS for a DestinationRule's `credentialName` (pure: Secret in,
 * material or a problem out). istiod (pilot/pkg/xds/sds.go) sends two shapes:
 *  - `kubernetes://<name>`: `tls_certificate` with the Kubernetes secret's `tls.crt`/`cert` as the
 *    inline certificate chain and `tls.key`/`key` as the inline private key (toEnvoyTLSSecret);
 *  - `kubernetes://<name>-cacert`: `validation_context` with `ca.crt`/`cacert` as the inline
 *    `trusted_ca`, and `ca.crl`/`crl` as the inline `crl` when the secret has one (toEnvoyCaSecret).
 *
 * What Envoy would reject is a `problem` (the response is NACKed, the last good version stays):
 * a chain or CA that is not PEM certificates, a key that does not parse or does not belong to the
 * leaf, sizes beyond the bounds. What Envoy would accept but the relay cannot enforce (a private
 * key provider, files, validation settings inside the secret) is `unusable` with the reason:
 * the relay refuses the connections that need it. Key material is never part of a message.
 */

/** Bounds: a certificate chain and a CA bundle are a few KiB (a system bundle ~200 KiB), a key a few. */
const MAX_CHAIN_BYTES = 256 * 1024;
const MAX_CHAIN_CERTS = 16;
const MAX_CA_BYTES = 1024 * 1024;
const MAX_CA_CERTS = 1024;
const MAX_KEY_BYTES = 64 * 1024;

export type SecretMaterial =
  /** a client certificate: the PEM chain (leaf first) and its PEM key */
  | { kind: 'certificate'; certChain: string; key: string; notAfter: number }
  /**
   * the CA bundle servers are verified against, and the CRLs they are checked against (Envoy: each
   * CA of the chain then needs one, unless `only_verify_leaf_cert_crl`)
   */
  | { kind: 'ca'; trustedCa: string; crl?: string }
  /** valid for Envoy, but the relay cannot use it: why */
  | { kind: 'unusable'; reason: string };

export type SecretDecoding = { material: SecretMaterial; problem?: undefined } | { problem: string; material?: undefined };

const PEM_CERT = /-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+?-----END CERTIFICATE-----/g;
const PEM_CRL = /-----BEGIN X509 CRL-----([A-Za-z0-9+/=\s]+?)-----END X509 CRL-----/g;
const MAX_CRL_BYTES = 4 * 1024 * 1024;
const MAX_CRLS = 64;

/**
 * The PEM CRLs of a text, or what is wrong. Node has no CRL parser: each block must be base64 of a
 * DER SEQUENCE whose length is the block's; the relay parses them with OpenSSL (tls_sds.lua) and
 * refuses the connection if one does not.
 */
function pemCrls(text: string): string[] | string {
  if (text.length > MAX_CRL_BYTES) return `the CRL is larger than ${MAX_CRL_BYTES} bytes`;
  const blocks = [...text.matchAll(PEM_CRL)];
  if (blocks.length === 0) return 'the CRL holds no PEM X509 CRL';
  if (blocks.length > MAX_CRLS) return `the CRL holds more than ${MAX_CRLS} CRLs`;
  for (const [i, block] of blocks.entries()) {
    const der = Buffer.from(block[1]!.replace(/\s+/g, ''), 'base64');
    if (derSequenceLength(der) !== der.length) return `CRL ${i + 1} is not a DER structure`;
  }
  return blocks.map((b) => b[0]);
}

/** The total length of a DER SEQUENCE at the start of `der`, or -1. */
function derSequenceLength(der: Buffer): number {
  if (der.length < 2 || der[0] !== 0x30) return -1;
  const first = der[1]!;
  if (first < 0x80) return 2 + first;
  const n = first & 0x7f;
  if (n === 0 || n > 4 || der.length < 2 + n) return -1;
  let length = 0;
  for (let i = 0; i < n; i++) length = length * 256 + der[2 + i]!;
  return 2 + n + length;
}

/** Inline bytes or string as text; a file or an environment variable is not readable here. */
function inlineText(source: DataSource | null | undefined): string | { unusable: string } | undefined {
  if (!source) return undefined;
  if (source.inline_bytes !== undefined) return Buffer.from(source.inline_bytes).toString('latin1');
  if (source.inline_string !== undefined) return source.inline_string;
  return { unusable: `a ${source.specifier ?? 'data'} source instead of inline data` };
}

/** The PEM certificates of a text, each parsed, or what is wrong. */
function pemCertificates(text: string, what: string, maxBytes: number, maxCerts: number): { pems: string[]; certs: X509Certificate[] } | string {
  if (text.length > maxBytes) return `${what} is larger than ${maxBytes} bytes`;
  const pems = text.match(PEM_CERT) ?? [];
  if (pems.length === 0) return `${what} holds no PEM certificate`;
  if (pems.length > maxCerts) return `${what} holds more than ${maxCerts} certificates`;
  const certs: X509Certificate[] = [];
  for (const [i, pem] of pems.entries()) {
    try {
      certs.push(new X509Certificate(pem));
    } catch (err) {
      return `${what}: certificate ${i + 1} does not parse (${(err as Error).message.slice(0, 100)})`;
    }
  }
  return { pems, certs };
}

function certificate(secret: Secret): SecretDecoding {
  const tls = secret.tls_certificate!;
  if (tls.private_key_provider) return { material: { kind: 'unusable', reason: 'the private key is held by a private key provider (ProxyConfig privateKeyProvider), which the relay cannot use' } };
  if (tls.pkcs12 || tls.watched_directory || tls.password) return { material: { kind: 'unusable', reason: 'a PKCS#12 bundle, a watched directory or a key password, which the relay does not read' } };
  const chainText = inlineText(tls.certificate_chain);
  const keyText = inlineText(tls.private_key);
  if (chainText === undefined) return { problem: 'tls_certificate without a certificate_chain' };
  if (keyText === undefined) return { problem: 'tls_certificate without a private_key' };
  if (typeof chainText !== 'string') return { material: { kind: 'unusable', reason: `the certificate chain is ${chainText.unusable}` } };
  if (typeof keyText !== 'string') return { material: { kind: 'unusable', reason: `the private key is ${keyText.unusable}` } };
  const chain = pemCertificates(chainText, 'the certificate chain', MAX_CHAIN_BYTES, MAX_CHAIN_CERTS);
  if (typeof chain === 'string') return { problem: chain };
  if (keyText.length > MAX_KEY_BYTES) return { problem: `the private key is larger than ${MAX_KEY_BYTES} bytes` };
  if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(keyText)) return { problem: 'the private key is not PEM' };
  let key;
  try {
    key = createPrivateKey({ key: keyText, format: 'pem' });
  } catch {
    // the library's message may quote the key's bytes: never passed on
    return { problem: 'the private key does not parse' };
  }
  const leaf = chain.certs[0]!;
  if (!leaf.checkPrivateKey(key)) return { problem: 'the private key does not match the first certificate of the chain' };
  return { material: { kind: 'certificate', certChain: chain.pems.join('\n') + '\n', key: keyText, notAfter: Math.floor(Date.parse(leaf.validTo) / 1000) } };
}

function validationContext(secret: Secret): SecretDecoding {
  const v = secret.validation_context!;
  const caText = inlineText(v.trusted_ca);
  if (caText === undefined) return { problem: 'validation_context without trusted_ca' };
  if (typeof caText !== 'string') return { material: { kind: 'unusable', reason: `the CA certificates are ${caText.unusable}` } };
  const ca = pemCertificates(caText, 'trusted_ca', MAX_CA_BYTES, MAX_CA_CERTS);
  if (typeof ca === 'string') return { problem: ca };
  const others = Object.entries(v).filter(([field, value]) => field !== 'trusted_ca' && field !== 'crl' && value !== undefined && value !== null && !(Array.isArray(value) && value.length === 0) && value !== false);
  if (others.length) return { material: { kind: 'unusable', reason: `the secret's validation context sets ${others.map(([f]) => f).join(', ')}, which the relay does not enforce` } };
  const trustedCa = ca.pems.join('\n') + '\n';
  // istiod: the Kubernetes secret's `ca.crl` / `crl` (secrets.go ExtractRoot)
  const crlText = inlineText(v.crl);
  if (crlText === undefined) return { material: { kind: 'ca', trustedCa } };
  if (typeof crlText !== 'string') return { material: { kind: 'unusable', reason: `the CRL is ${crlText.unusable}` } };
  const crls = pemCrls(crlText);
  if (typeof crls === 'string') return { problem: crls };
  return { material: { kind: 'ca', trustedCa, crl: crls.join('\n') + '\n' } };
}

export function decodeSecret(secret: Secret): SecretDecoding {
  if (secret.tls_certificate) return certificate(secret);
  if (secret.validation_context) return validationContext(secret);
  const type = secret.session_ticket_keys ? 'session_ticket_keys' : secret.generic_secret ? 'generic_secret' : 'nothing';
  return { material: { kind: 'unusable', reason: `the secret holds ${type}, not a certificate or CA certificates` } };
}
