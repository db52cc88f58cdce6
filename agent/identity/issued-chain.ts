import { X509Certificate, type KeyObject } from 'node:crypto';
import { shortQuote } from '../../cli/short-quote.js';

/** What the CA returned, checked: the certificate to present and the roots it chains to. */
export interface IssuedChain {
  /** the leaf and the intermediates, leaf first (what a TLS endpoint presents; no root) */
  certChainPem: string;
  /** the root certificate(s) the chain ends with, to verify mesh peers against */
  rootPem: string;
  notBefore: Date;
  notAfter: Date;
  serialNumber: string;
}

export class IssuedChainError extends Error {}

/** istiod answers with a handful of certificates; anything much larger is not a certificate chain */
export const MAX_CHAIN_CERTIFICATES = 16;
export const MAX_CERTIFICATE_PEM_LENGTH = 64 * 1024;

const BEGIN = '-----BEGIN CERTIFICATE-----';
const END = '-----END CERTIFICATE-----';

/** The PEM certificate blocks of `text`, in order (older istiods sent a whole chain in one element). */
function pemBlocks(text: string, element: number): string[] {
  const blocks: string[] = [];
  let at = 0;
  for (;;) {
    const begin = text.indexOf(BEGIN, at);
    if (begin < 0) break;
    const end = text.indexOf(END, begin);
    if (end < 0) throw new IssuedChainError(`element ${element} of the chain has an unterminated PEM block`);
    blocks.push(`${text.slice(begin, end + END.length)}\n`);
    at = end + END.length;
  }
  if (blocks.length === 0) throw new IssuedChainError(`element ${element} of the chain holds no PEM certificate`);
  return blocks;
}

function selfSigned(cert: X509Certificate): boolean {
  return cert.checkIssued(cert) && cert.verify(cert.publicKey);
}

function issuedBy(cert: X509Certificate, issuer: X509Certificate): boolean {
  return cert.checkIssued(issuer) && cert.verify(issuer.publicKey);
}

/**
 * Checks istiod's `cert_chain` (leaf first, root last; current istiods send one certificate per element,
 * with every root of their bundle at the end) before the agent serves it, and refuses what it could not
 * use or should not present: a leaf for another key or identity, a chain that does not verify up to
 * a self-signed root, an expired leaf.
 */
export function checkIssuedChain(certChain: readonly string[], expected: { spiffeId: string; key: KeyObject }, now: number): IssuedChain {
  if (certChain.length === 0) throw new IssuedChainError('the CA answered with an empty certificate chain');
  if (certChain.length > MAX_CHAIN_CERTIFICATES) throw new IssuedChainError(`the CA answered with ${certChain.length} chain elements (at most ${MAX_CHAIN_CERTIFICATES})`);
  const pems: string[] = [];
  certChain.forEach((element, i) => {
    if (element.length > MAX_CERTIFICATE_PEM_LENGTH) throw new IssuedChainError(`element ${i} of the chain is ${element.length} characters long (at most ${MAX_CERTIFICATE_PEM_LENGTH})`);
    pems.push(...pemBlocks(element, i));
  });
  if (pems.length > MAX_CHAIN_CERTIFICATES) throw new IssuedChainError(`the chain holds ${pems.length} certificates (at most ${MAX_CHAIN_CERTIFICATES})`);
  const certs = pems.map((pem, i) => {
    try {
      return new X509Certificate(pem);
    } catch {
      throw new IssuedChainError(`certificate ${i} of the chain is not a valid X.509 certificate`);
    }
  });

  const leaf = certs[0]!;
  if (!leaf.checkPrivateKey(expected.key)) throw new IssuedChainError('the leaf certificate is not for the key of the CSR');
  if (leaf.ca) throw new IssuedChainError('the leaf certificate is a CA certificate');
  const san = leaf.subjectAltName ?? '';
  if (san !== `URI:${expected.spiffeId}`) {
    throw new IssuedChainError(`the leaf certificate's SAN is ${shortQuote(san)}, not exactly URI:${expected.spiffeId}`);
  }

  // the roots are the self-signed certificates at the end; everything before them is leaf + intermediates
  let firstRoot = certs.length;
  while (firstRoot > 1 && selfSigned(certs[firstRoot - 1]!)) firstRoot--;
  if (firstRoot === certs.length) throw new IssuedChainError('the chain does not end with a self-signed root certificate');
  const roots = certs.slice(firstRoot);
  for (let i = 0; i < firstRoot - 1; i++) {
    if (!certs[i + 1]!.ca || !issuedBy(certs[i]!, certs[i + 1]!)) throw new IssuedChainError(`certificate ${i} of the chain is not signed by the CA certificate after it`);
  }
  if (!roots.some((root) => root.ca && issuedBy(certs[firstRoot - 1]!, root))) {
    throw new IssuedChainError('the chain does not verify up to any of its root certificates');
  }

  const notBefore = new Date(leaf.validFrom);
  const notAfter = new Date(leaf.validTo);
  if (!(notAfter.getTime() > now)) throw new IssuedChainError(`the leaf certificate expired at ${leaf.validTo}`);
  return {
    certChainPem: pems.slice(0, firstRoot).join(''),
    rootPem: pems.slice(firstRoot).join(''),
    notBefore,
    notAfter,
    serialNumber: leaf.serialNumber,
  };
}
